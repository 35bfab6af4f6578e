"""compare.py --manual DIR on real MNIST: an exercise folder trained against torch in lock step.

Not written yet: one line naming the function, exit 1 (the ResNet's two, 13 and 14, too).
Written: MATCH (softmax regression, the MLP, the CNN, the ResNet). A seeded bug: the
tutor's diagnosis names the tensor. A learner's error: one line saying where. A bad folder:
one line, exit 2, before the data or the output folder is touched.
"""

import dataclasses
import re
import sys
from pathlib import Path

import pytest

import compare
import manual
from common.data import Splits, load_splits
from practice import exercises
from practice.exercises import NAMES
from tests.test_compare import CNN, MLP, QUICK, run
from tests.test_exercises import SEEDED, seed, solve


def folder(tmp_path, left: list[str], change=None):
    """An exercise folder with the exercises in `left` still to write, then change(folder)."""
    path = tmp_path / "ex"
    exercises.write(path, names=left)
    if change:
        change(path)
    return path


def written_as(tmp_path, name: str, body: str):
    """An exercise folder with every exercise written as in manual/, except name, whose body
    is body (as a learner wrote it)."""
    return folder(tmp_path, [name], lambda path: solve(path, name, body))


def run_manual(capsys, mnist_root, tmp_path, path, *flags):
    """compare.py --subset 2000 --epochs 1 --no-plots --manual path: run's four results."""
    return run(capsys, mnist_root, tmp_path, *QUICK, "--no-plots", *flags,
               "--manual", str(path))


def test_a_fresh_folder_says_which_function_is_needed_first(capsys, mnist_root, tmp_path):
    """The first exercise not written, in the order to write them (the grader's "Next:"):
    one line, its hint, exit 1, before the data or the output folder is touched."""
    status, out, err, report = run(capsys, mnist_root, tmp_path, *QUICK,
                                   "--manual", str(folder(tmp_path, NAMES)))
    assert status == 1 and report is None
    assert not (tmp_path / "run").exists()  # nothing written: no folder left behind
    assert err.count("\n") == 1
    assert re.fullmatch(r"softmax is not written yet \(.*functional\.py line \d+\)\. "
                        rf"Hint: {re.escape(exercises.HINTS['softmax'])}\n", err)
    assert "MATCH" not in out


def test_softmax_regression_written_but_no_relu_the_mlp_says_relu(capsys, mnist_root, tmp_path):
    status, _, err, _ = run_manual(capsys, mnist_root, tmp_path, folder(tmp_path, NAMES[6:]),
                                   *MLP)
    assert status == 1 and err.count("\n") == 1
    assert err.startswith("ReLU.backward is not written yet (")


def test_a_folder_with_every_exercise_written_matches(capsys, mnist_root, tmp_path):
    """The solutions of manual/, copied as a learner's: MATCH, exit 0, for softmax regression
    and for the MLP with BatchNorm and Adam."""
    path = folder(tmp_path, [])
    status, out, _, _ = run_manual(capsys, mnist_root, tmp_path, path)
    assert status == 0 and "\nMATCH (float32)" in out
    status, out, _, _ = run_manual(capsys, mnist_root, tmp_path, path, *MLP, "--batchnorm",
                                   "--optimizer", "adam", "--lr", "1e-3")
    assert status == 0 and "\nMATCH (float32)" in out


STOPPED = ("Stopped at the first mismatch. --keep-going trains on; the manual learner is then "
           "re-synchronized to torch before every step, so its accuracy will be torch's.")
# The tensor compare.py's tutor names first for each seeded mistake (the words: SEEDED).
FIRST = {"one-hot-shifted": "dLoss/dlogits (logits.grad)", "bias-gradient-as-mean": "bias.grad",
         "sign-flipped": "dLoss/dlogits (logits.grad)", "weight-gradient-transposed": "weight.grad"}


@pytest.mark.parametrize("case", SEEDED)
def test_a_seeded_mistake_stops_the_run_at_step_1_with_the_tutors_words(capsys, mnist_root,
                                                                        tmp_path, case):
    """Each seeded mistake: MISMATCH at step 1 with the grader's words (SEEDED), exit 1, no
    accuracy of the lock step shown, and (where the code can train at all) what it reaches
    on its own next to torch."""
    path = folder(tmp_path, [], seed(case))
    status, out, _, report = run_manual(capsys, mnist_root, tmp_path, path)
    _, _, _, _, kind, words = SEEDED[case]
    assert status == 1 and "test accuracy" not in out and report["manual"]["test_accuracy"] is None
    found = report["diagnosis"]
    assert (found["step"], found["kind"]) == (1, kind)
    assert re.search(rf"^MISMATCH \(float32\) in epoch 1, step 1, {re.escape(FIRST[case])} "
                     rf"differs first \({kind}\): {words}", out, re.MULTILINE), out
    assert out.rstrip().endswith(STOPPED)
    own = report["on_its_own"]
    if case == "weight-gradient-transposed":  # torch refuses the .grad: no step on its own
        assert own is None and "On its own" not in out
        assert re.search(r"belongs\?\)\. At .*layers\.py line \d+, in (Linear\.)?backward\.$",
                         found["message"])
        return
    assert own["steps"] == 20 and re.search(
        r"^On its own, each learner trained afresh on its own gradients \(as --independent\) "
        r"for the first 20 steps of epoch 1: validation accuracy manual .+, torch \d+\.\d+%\.$",
        out, re.MULTILINE)
    lines = out.splitlines()  # the diagnosis first, then what runs after it, announced
    assert lines[-4].startswith("MISMATCH") and lines[-3].startswith("Now training each")
    if case == "one-hot-shifted":  # it learns to predict y + 1
        assert own["manual"]["val_accuracy"] < 0.05 < 0.5 < own["torch"]["val_accuracy"]
    assert sys.modules["manual"] is manual  # the real manual/ is back, untouched
    assert Path(manual.layers.__file__).parent == exercises.MANUAL


# The CNN's broken twins, each a learner's mistake in layers.py (manual/'s lines, then the
# learner's): the tensor compare.py's tutor names first, the kind, and its words.
RIGHT_WEIGHT_GRAD = "self.weight.grad = per_channel.transpose(0, 1)[..., :k, :k].contiguous()"
CNN_SEEDED = {
    "kernel-flipped": (
        [(RIGHT_WEIGHT_GRAD, RIGHT_WEIGHT_GRAD.replace(".contiguous()", ".flip(-2, -1)"))],
        "layers.3.weight.grad", "permuted",
        r"manual's equals torch's rotated by 180 degrees \(a\.flip\(-2, -1\)\), each kernel: a "
        r"true convolution, which flips the kernel, where nn\.Conv2d takes a cross-correlation"),
    "pooling-to-every-tie": (
        [("        self.input_shape = x.shape\n        windows",
          "        self.input_shape, self.x = x.shape, x\n        windows"),
         ("        return best\n\n    __call__", "        self.y = best\n        return best\n\n"
          "    __call__"),
         ("""        n, c, height, width = self.input_shape
        grad_input = grad_output.new_zeros(n, c, height * width)
        grad_input.scatter_add_(2, self.indices.flatten(2), grad_output.flatten(2))
        return grad_input.view(self.input_shape)""",
          """        grad_input = grad_output.new_zeros(self.input_shape)
        for rows, columns in self.windows(self.input_shape):  # to every entry equal to y
            grad_input[..., rows, columns] += grad_output * (self.x[..., rows, columns] == self.y)
        return grad_input""")],
        "dLoss/d(hidden.relu.4), the hidden layer's output gradient (what the backward of the "
        "layer above it returns)", "partial",
        r"only entries at tied maxima of max pooling differ: [\d,]+, each one of several equal "
        r"largest values of its window\. Torch sends a window's gradient to its first maximum "
        r"in row-major order only \(val > maxval\); at [\d,]+ of them manual's is nonzero where "
        r"torch's is 0: did you send the gradient to every tied maximum\?"),
    "kernel-flipped-in-dx": (
        [("return F.conv_transpose2d(grad_output, self.weight, stride",
          "return F.conv_transpose2d(grad_output, self.weight.flip(-2, -1), stride")],
        "dLoss/d(hidden.maxpool2d.2), the hidden layer's output gradient (what the backward of "
        "the layer above it returns)", "other",
        r"ConvolutionBackward0 \(layers\.3\), its gradient for the input, differs when fed "
        r"torch's grad_output; its weight and bias gradients agree; the formula is "
        r"\S*layers\.py line \d+\."),
    "kernel-gradient-as-mean": (
        [(RIGHT_WEIGHT_GRAD, RIGHT_WEIGHT_GRAD.replace(".contiguous()", " / len(x)"))],
        "layers.3.weight.grad", "scale",
        r"manual's is 1/100 of torch's, 1/N for the batch size N = 100"),
    "flatten-hwc": (
        [("return x.flatten(start_dim=1)",
          "return x.permute(0, 2, 3, 1).flatten(start_dim=1)"),
         ("return grad_output.reshape(self.input_shape)",
          "n, c, h, w = self.input_shape\n        return grad_output.reshape(n, h, w, c)"
          ".permute(0, 3, 1, 2)")],
        "hidden.flatten.6, the hidden layer's output in the forward pass,", "permuted",
        r"manual's holds torch's entries flattened in \(H, W, C\) order, torch's in \(C, H, W\)"),
}


@pytest.fixture
def few_images(monkeypatch):
    """compare.py's data with 1,000 validation and 1,000 test images instead of 5,000 and
    10,000: a CNN's forward over all of them would take most of each run below. A MATCH
    still needs its accuracies within 0.1 % and its predictions to agree on 99.9 %, of the
    1,000."""
    def fewer(*args, **kwargs) -> Splits:
        data = load_splits(*args, **kwargs, val_size=1000)
        return dataclasses.replace(data, test_x=data.test_x[:1000], test_y=data.test_y[:1000])
    monkeypatch.setattr(compare, "load_splits", fewer)


def cnn_seed(case: str):
    """The function that writes CNN_SEEDED[case] into a folder's layers.py."""
    def write(folder: Path) -> None:
        path = folder / "layers.py"
        text = path.read_text()
        for right, wrong in CNN_SEEDED[case][0]:
            assert right in text, (case, right)
            text = text.replace(right, wrong, 1)
        path.write_text(text)
    return write


@pytest.mark.parametrize("case", CNN_SEEDED)
def test_a_cnn_mistake_is_diagnosed_at_its_tensor(capsys, mnist_root, tmp_path, few_images,
                                                 case):
    """Each broken twin of the CNN's layers: MISMATCH at step 1, at the tensor where it
    starts, with the tutor's words for it."""
    path = folder(tmp_path, [], cnn_seed(case))
    status, out, _, report = run_manual(capsys, mnist_root, tmp_path, path, *CNN)
    _, tensor, kind, words = CNN_SEEDED[case]
    assert status == 1 and (report["diagnosis"]["step"], report["diagnosis"]["kind"]) == (1, kind)
    assert re.search(rf"^MISMATCH \(float32\) in epoch 1, step 1, {re.escape(tensor)} "
                     rf"differs first \({kind}\): {words}", out, re.MULTILINE), out


def test_the_function_to_fix_is_named_with_its_file_and_line(capsys, mnist_root, tmp_path):
    """BatchNorm1d.backward without its variance term: dLoss/d(hidden.linear) is the first to
    differ, with no simpler pattern; the tutor names the node whose backward is wrong when
    fed torch's gradient, the def's line of its formula in the learner's file, and that the
    node's weight and bias gradients agree. The twin: a weight gradient off by a random
    factor per entry, named at the last Linear's AddmmBackward0, whose other two agree."""
    def no_variance_term(path: Path) -> None:
        text = (path / "layers.py").read_text()
        right = (".addcmul_(\n"
                 "            self.x_hat, per_channel(slope, g))")
        assert right in text
        (path / "layers.py").write_text(text.replace(right, ""))
    path = folder(tmp_path, [], no_variance_term)
    _, out, _, report = run_manual(capsys, mnist_root, tmp_path, path, *MLP, "--batchnorm")
    lines = (path / "layers.py").read_text().splitlines()
    line = next(number for number, text in enumerate(lines, start=1)
                if text.startswith("class BatchNorm1d"))
    line += next(i for i, text in enumerate(lines[line:]) if "def backward(" in text) + 1
    assert report["diagnosis"]["tensor"] == "hidden.linear.grad"
    assert (f"differs first (other): NativeBatchNormBackward0 (layers.1), its gradient for the "
            "input, differs when fed torch's grad_output; its weight and bias gradients agree; "
            f"the formula is {path}/layers.py line {line}.") in report["diagnosis"]["message"] \
        in out

    def scrambled(path: Path) -> None:
        text = (path / "layers.py").read_text()
        right = "self.weight.grad = grad_output.T @ self.input"
        (path / "layers.py").write_text(text.replace(
            right, f"{right} * (1 + torch.rand_like(self.weight))", 1))
    path = folder(tmp_path / "twin", [], scrambled)
    _, _, _, report = run_manual(capsys, mnist_root, tmp_path, path, *MLP)
    assert report["diagnosis"]["tensor"] == "layers.2.weight.grad"
    assert re.search(r"differs first \(other\): AddmmBackward0 \(layers\.2\), its gradient for "
                     r"the weight, differs when fed torch's grad_output; its bias and input "
                     r"gradients agree; the formula is \S+ line \d+\.",
                     report["diagnosis"]["message"])


def test_manual_runs_draw_plots_only_when_asked_and_name_what_they_cannot_see(
        capsys, mnist_root, tmp_path):
    """compare.py --manual: report.json only, unless --plots. A softmax without its max
    matches on MNIST, and the line after the verdict names the check that catches it; the
    twin: manual/'s solutions get no such line."""
    def unshifted(path: Path) -> None:
        text = (path / "functional.py").read_text()
        right = "exp = (logits - logits.amax(dim=-1, keepdim=True)).exp()"
        assert right in text
        (path / "functional.py").write_text(text.replace(right, "exp = logits.exp()"))
    path = folder(tmp_path, [], unshifted)
    status, out, _, _ = run(capsys, mnist_root, tmp_path, *QUICK, "--manual", str(path))
    assert status == 0 and "\nUNSEEN: your softmax gives NaN or inf" in out
    assert not list((tmp_path / "run").glob("*.png"))
    status, out, _, _ = run(capsys, mnist_root, tmp_path, *QUICK, "--plots", "--manual",
                            str(folder(tmp_path / "right", [])))
    assert status == 0 and "UNSEEN" not in out and list((tmp_path / "run").glob("*.png"))


def test_every_exercise_written_the_cnn_matches(capsys, mnist_root, tmp_path, few_images):
    status, out, _, _ = run_manual(capsys, mnist_root, tmp_path, folder(tmp_path, []), *CNN)
    assert status == 0 and "\nMATCH (float32)" in out


RESNET = ["--model", "resnet", "--channels", "4", "8", "--subset", "200"]  # 2 steps


@pytest.mark.parametrize("left", [["BatchNorm2d.backward", "basic_block"], ["basic_block"]],
                         ids=["13-14", "14"])
def test_the_resnet_names_its_exercise_not_written_yet(capsys, mnist_root, tmp_path, left):
    """Every exercise but the ResNet's: --model resnet names the first of them left, in one
    line with its hint, exit 1, before anything trains; the other models do not need them."""
    path = folder(tmp_path, left)
    status, _, err, report = run_manual(capsys, mnist_root, tmp_path, path, *RESNET)
    assert status == 1 and report is None and err.count("\n") == 1
    assert re.fullmatch(rf"{re.escape(left[0])} is not written yet \(.*\.py line \d+\)\. "
                        rf"Hint: {re.escape(exercises.HINTS[left[0]])}\n", err)
    assert not set(left) & set(exercises.needed("cnn", True, "adam", True))


def test_every_exercise_written_the_resnet_matches(capsys, mnist_root, tmp_path, few_images):
    """The ResNet trains through the folder's engine, BatchNorm2d.backward and basic_block."""
    status, out, _, _ = run_manual(capsys, mnist_root, tmp_path, folder(tmp_path, []), *RESNET)
    assert status == 0 and "\nMATCH (float32)" in out


def test_a_stop_on_rounding_says_it_is_not_the_learners_code(capsys, mnist_root, tmp_path):
    """Every exercise right, batch size 1 (the tutor's run): the first mismatch is float32
    rounding; the stop says so and how to check exactly. With --independent the stop line says
    each learner trains on its own (no re-synchronization to speak of)."""
    path = folder(tmp_path, [])
    flags = ("--batch-size", "1")
    status, out, _, report = run_manual(capsys, mnist_root, tmp_path, path, *flags)
    assert status == 1 and report["diagnosis"]["kind"] == "rounding"
    assert out.rstrip().endswith(f"{STOPPED} This one is float32 rounding, not your code: "
                                 "--dtype float64 checks it to 1e-10.")
    status, out, _, report = run_manual(capsys, mnist_root, tmp_path, path, *flags,
                                        "--independent")
    assert status == 1 and report["on_its_own"] is None
    assert "Stopped at the first mismatch. --keep-going trains on, each learner on its own." \
        in out and "re-synchronized" not in out


def test_a_wrong_update_stops_at_step_1_and_its_code_alone_diverges(capsys, mnist_root,
                                                                    tmp_path):
    """SGD.step that also scales each parameter by 1e4: the parameters after the update differ
    at step 1 (the gradients agree), and on its own the manual code overflows."""
    path = written_as(tmp_path, "SGD.step", "        for param, grad in self.gradients():\n"
                                            "            param.add_(grad, alpha=-self.lr)"
                                            ".mul_(1e4)\n")
    status, out, _, report = run_manual(capsys, mnist_root, tmp_path, path)
    assert status == 1 and report["diagnosis"]["step"] == 1
    assert report["diagnosis"]["tensor"] == "weight after the update"
    assert "diverged_at" in report["on_its_own"]["manual"]
    assert "val_accuracy" in report["on_its_own"]["torch"]
    assert re.search(r"validation accuracy manual diverged \(its loss became NaN or infinite "
                     r"at step \d+\), torch \d+\.\d+%\.", out)


def test_keep_going_trains_on_and_says_the_accuracy_is_torchs(capsys, mnist_root, tmp_path):
    """--keep-going: every epoch, and a final table whose manual column shows no accuracy of
    its own, says why, and gives what the code reaches on its own. The twin: a matching
    folder's table shows both accuracies."""
    path = folder(tmp_path, [], seed("bias-gradient-as-mean"))
    status, out, _, report = run_manual(capsys, mnist_root, tmp_path, path, "--keep-going")
    assert status == 1 and report["resynchronized"] is True
    lines = out.splitlines()
    table = lines.index(f"{'':16}{'manual':>10}{'torch':>10}")
    torch_accuracy = f"{report['torch']['test_accuracy']:.2%}"
    assert lines[table + 1] == f"{'test accuracy':16}{'-':>10}{torch_accuracy:>10}"
    assert lines[table + 2].startswith("manual: not its own result. A mismatch was found, and "
                                       "the lock step re-synchronized the manual learner")
    assert lines[table + 3].startswith("On its own, each learner trained afresh")
    epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch 1: "))
    assert "(manual: re-synchronized to torch)" in lines[epoch]
    assert lines[epoch + 1].startswith("MISMATCH (float32), training goes on (--keep-going): "
                                       "step 1, bias.grad differs first (scale)")
    assert lines[table - 1].startswith("Now training each learner afresh")  # on its own
    assert "test accuracies within 0.1% [n/a: re-synchronized]; predictions agree >= 99.9% " \
        "[n/a: re-synchronized]" in out
    status, out, _, report = run_manual(capsys, mnist_root, tmp_path, folder(tmp_path / "ok", []))
    assert status == 0 and report["resynchronized"] is False and "On its own" not in out
    assert re.search(r"^test accuracy +\d+\.\d+% +\d+\.\d+%$", out, re.MULTILINE)


def test_an_error_in_the_learners_update_gets_one_line_that_says_where(capsys, mnist_root,
                                                                        tmp_path):
    """SGD.step raising TypeError: one line with the file, the line and the error, exit 1."""
    path = written_as(tmp_path, "SGD.step",
                      "        for param, grad in self.gradients():\n"
                      "            param.add_(grad, alpha=-self.lr, beta=1)\n")
    status, _, err, _ = run_manual(capsys, mnist_root, tmp_path, path)
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert re.fullmatch(r"error: .*optim\.py line \d+, in (SGD\.)?step: TypeError: .+\n", err)


def test_an_error_in_the_learners_backward_is_a_mismatch_that_says_where(capsys, mnist_root,
                                                                         tmp_path):
    """Linear.backward raising: the step's MISMATCH says what failed, in which file and line."""
    path = written_as(tmp_path, "Linear.backward",
                      "        self.weight.grad = grad_output @ self.input\n")
    status, out, err, _ = run_manual(capsys, mnist_root, tmp_path, path)
    assert status == 1 and "Traceback" not in err
    assert re.search(r"MISMATCH \(float32\) in epoch 1, step 1, weight\.grad differs first "
                     r"\(other\): the manual code failed before computing it: RuntimeError \(at "
                     r".*layers\.py line \d+, in (Linear\.)?backward\): ", out)


def test_an_sgd_that_keeps_no_momentum_buffer_is_told_which_it_lacks(capsys, mnist_root,
                                                                    tmp_path):
    """SGD.step ignoring momentum: the run stops at step 1, naming the buffers torch keeps."""
    path = written_as(tmp_path, "SGD.step", "        for param, grad in self.gradients():\n"
                                            "            param.add_(grad, alpha=-self.lr)\n")
    status, out, _, _ = run_manual(capsys, mnist_root, tmp_path, path, "--momentum", "0.9")
    assert status == 1
    assert out.splitlines()[1] == (
        "MISMATCH (float32) in epoch 1, step 1, optimizer state differs first (shape): manual's "
        "optimizer state holds 0 tensors (none) where the other has 2 "
        "(linear.weight.momentum_buffer, linear.bias.momentum_buffer).")


def test_a_forgotten_return_gets_one_line_naming_the_function(capsys, mnist_root, tmp_path):
    """cross_entropy returning None: one line that names it, not the code it broke, exit 1."""
    path = written_as(tmp_path, "cross_entropy",
                      "    check_arguments(reduction, label_smoothing)\n")
    status, _, err, _ = run_manual(capsys, mnist_root, tmp_path, path)
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert re.fullmatch(r"cross_entropy returned None \(.*functional\.py line \d+\): did you "
                        r"forget its return\?\n", err)


def test_an_error_a_learners_code_causes_elsewhere_gets_one_line(capsys, mnist_root, tmp_path):
    """cross_entropy returning a string breaks compare.py's own code: one line all the same,
    saying where, and with which folder as manual."""
    path = written_as(tmp_path, "cross_entropy", "    return 'a loss'\n")
    status, _, err, _ = run_manual(capsys, mnist_root, tmp_path, path)
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert re.fullmatch(rf"error: lockstep/learner\.py line \d+, in Learner\.evaluate: "
                        rf"ValueError: .+ "
                        rf"\(with {re.escape(str(path))} as manual\)\n", err)


@pytest.mark.parametrize(("make", "message"), [
    (lambda path: None, "no such folder"),
    (lambda path: path.mkdir(), "is not a package"),
    (lambda path: exercises.write(path) or (path / "optim.py").write_text("class SGD(\n"),
     "optim.py line 1: SyntaxError: "),
])
def test_a_bad_folder_gets_one_line_and_exit_2(capsys, tmp_path, make, message):
    """Missing, not a package, a syntax error: one line, exit 2, before the data is looked
    for or the output folder made."""
    path = tmp_path / "ex"
    make(path)
    status, _, err, report = run(capsys, tmp_path / "no-data", tmp_path, *QUICK,
                                 "--manual", str(path))
    assert status == 2 and report is None
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert not (tmp_path / "no-data").exists() and not (tmp_path / "run").exists()
