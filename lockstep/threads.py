"""How many threads torch runs a compare.py run on.

Softmax regression's products (100 x 784 by 784 x 10) are too small to gain from a second
thread: on one it is as fast on a quiet machine, and on a busy one (another program holding a
core) it is not slowed by a second thread that spins while it waits (make demo: 43.6 s on
torch's 2 threads, 11.7 s on one; docs/speed.md, "A busy machine"). The MLP and the CNN keep
torch's threads: for them every setting measured costs something on a quiet machine. But the
MLP through the engine (--engine) runs many small operations, each of which the second thread
waits on: on one thread, 12.8 s against 10.5 s on two on a quiet machine, and 13.1 s against
189 s on a busy one (python compare.py --model mlp --engine), so it takes one thread too.
"""

import contextlib
import os

import torch

ONE_THREAD = ("softmax",)  # the models that run on one thread, unless OMP_NUM_THREADS says
ONE_THREAD_ENGINE = ("softmax", "mlp")  # with --engine


@contextlib.contextmanager
def for_model(model: str, engine: bool = False):
    """Within it, torch runs on one thread for a model of ONE_THREAD (of ONE_THREAD_ENGINE
    with --engine), unless OMP_NUM_THREADS is set: the user's choice wins; afterwards, on as
    many as before."""
    before = torch.get_num_threads()
    if model in (ONE_THREAD_ENGINE if engine else ONE_THREAD) and \
            "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
