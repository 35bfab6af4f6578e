"""compare.py --engine and --graph on real MNIST: manual's gradients through its engine, in lock
step, and the two graphs of step 1 side by side with their verdict.

- --engine: the MLP with BatchNorm1d and the CNN MATCH in float32, the MLP in float64 too (the
  limit 1e-10); the report says the run went through the engine. (Every model's engine
  against torch: tests/test_autograd.py, tests/test_graph.py.)
- --graph: the MLP with BatchNorm1d and the CNN print both graphs, node by node in torch's
  order, and GRAPH MATCH, exit 0, and write no run folder; a manual package whose Linear is
  one node is a GRAPH MISMATCH that names it, exit 1 (the broken twin).
"""

import re

import pytest
import torch

import manual
from tests.test_compare import CNN, MLP, QUICK, run
from tests.test_graph import linear_as_one_node

MODELS = {"softmax": [], "mlp": MLP, "mlp-batchnorm": [*MLP, "--batchnorm"], "cnn": CNN}


@pytest.mark.parametrize(("model", "dtype"), [("mlp-batchnorm", "float32"), ("cnn", "float32"),
                                             ("mlp-batchnorm", "float64")])
def test_engine_runs_match(capsys, mnist_root, tmp_path, model, dtype):
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK, *MODELS[model],
                                 "--engine", "--dtype", dtype, "--no-plots")
    assert status == 0, out
    assert f"MATCH ({dtype})" in out and "MISMATCH" not in out
    assert report["config"]["engine"] is True
    assert report["max_grad_rel_diff"] <= (1e-4 if dtype == "float32" else 1e-10)


@pytest.mark.parametrize("model", ["mlp-batchnorm", "cnn"])  # tests/test_graph.py: all four
def test_graph_prints_both_graphs_and_their_verdict(capsys, mnist_root, tmp_path, model):
    status, out, _, report = run(capsys, mnist_root, tmp_path, *MODELS[model], "--graph")
    assert status == 0, out
    assert report is None and not (tmp_path / "run").exists()
    rows = re.findall(r"^ +\d+  (\S+)(?: -> [\d, -]+)? +(\S+)", out, re.MULTILINE)
    assert rows and all(mine == torch_side for mine, torch_side in rows)
    names = [mine for mine, _ in rows]
    assert names[names.index("AddmmBackward0") + 1] == "AccumulateGrad"  # the bias, at once
    assert re.search(r"^GRAPH MATCH: \d+ nodes and \d+ edges as torch's, in torch's order",
                     out, re.MULTILINE)


@pytest.mark.twin
def test_graph_of_a_linear_recorded_as_one_node_is_a_mismatch(capsys, mnist_root, tmp_path,
                                                               monkeypatch):
    monkeypatch.setitem(manual.functions.LAYER_OPS, "Linear", linear_as_one_node)
    status, out, _, _ = run(capsys, mnist_root, tmp_path, *MLP, "--graph")
    assert status == 1
    assert "GRAPH MISMATCH: LinearBackward0 (layers.2): named LinearBackward0 where torch's " \
           "is AddmmBackward0" in out


def test_engine_and_chain_share_every_formula(monkeypatch):
    """Each derivative is written once: a layer's node runs the layer's own backward. A
    Conv2d.backward that raises is raised from the engine's ConvolutionBackward0 too."""
    def broken(self, grad_output, needs_input_grad=True):
        raise RuntimeError("Conv2d.backward ran")

    monkeypatch.setattr(manual.layers.Conv2d, "backward", broken)
    torch.manual_seed(0)
    model = manual.model.CNN(channels=(2, 3))
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([1, 2, 3, 4])
    with pytest.raises(RuntimeError, match=r"Conv2d\.backward ran"):
        manual.train.forward_backward_engine(model, x, y)
