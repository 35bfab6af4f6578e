"""The tutor (lockstep/diagnosis.py and the modules it calls) on small synthetic steps, no
MNIST needed: each kind of difference, the order in which tensors are searched, the float64
reference, the replayed update, and the replayed failure. Seeded bugs are monkeypatched into
the manual code; the same step without them must find nothing.
"""

import re

import pytest
import torch

import manual
import torch_impl
from lockstep import diagnosis, kinds, reference, replay, report
from lockstep.checks import difference_stats, exceeds, named_stats
from lockstep.learner import Learner
from tests.helpers import linear_backward, random_batch

LIMIT = 1e-4
IN_FEATURES, HIDDEN, NUM_CLASSES, BATCH = 20, 8, 5, 16


def learners(hidden=None, batchnorm=False, dtype=torch.float32, optimizer="SGD",
             options=None):
    """A manual and a torch learner from the same seed (identical parameters)."""
    pair = []
    for package in (manual, torch_impl):
        torch.manual_seed(0)
        pair.append(Learner(package, IN_FEATURES, NUM_CLASSES, options or {"lr": 0.1},
                            dtype=dtype, hidden=hidden, batchnorm=batchnorm,
                            optimizer=optimizer))
    return pair


def both_gradients(pair, x, y):
    for learner in pair:
        learner.gradients(x, y)


def batch(dtype=torch.float32, seed=0):
    x, y = random_batch(BATCH, IN_FEATURES, NUM_CLASSES, dtype=dtype, seed=seed)
    return x, y


# -- the kinds, on tensors made to order -------------------------------------------------------

B = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.1


def changed(rows=None, columns=None, entries=None):
    """B with some rows, columns or (row, column) entries doubled."""
    a = B.clone()
    if rows is not None:
        a[rows] *= 2
    if columns is not None:
        a[:, columns] *= 2
    for entry in entries or []:
        a[entry] *= 2
    return a


@pytest.mark.parametrize(("a", "kind", "factor", "words"), [
    (B * 6, "scale", 6, "the batch size N = 6: did you forget to divide by the batch size?"),
    (B / 6, "scale", 1 / 6, "1/6 of torch's, 1/N for the batch size N = 6"),
    (-B, "scale", -1, "-1 x torch's: the sign is flipped"),
    (1.01 * B, "scale", 1.01, "1.01 x torch's: off by a constant factor of 1.01"),
    (B.T.contiguous(), "shape", None, "manual's transposed (a.T) equals torch's"),
    (B.reshape(1, 6, 4), "shape", None, "manual's reshaped to (6, 4) equals torch's"),
    (B[:3], "shape", None, "neither manual's transposed nor a reshape of it"),
    (None, "shape", None, "manual's was never set (None); the other's is (6, 4)"),
    (changed(rows=[2]), "partial", None, "only some rows differ: 2 (1 of the 6"),
    (changed(columns=[0, 3]), "partial", None, "only some columns differ: 0, 3 (2 of the 4"),
    (changed(entries=[(0, 0), (5, 3)]) * torch.tensor([1.0, 1, 1, 1]), "partial", None,
     "only some rows differ: 0, 5"),
    (B + torch.randn(6, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64),
     "other", None, "no simple pattern"),
], ids=["N", "1/N", "sign", "factor", "transposed", "reshaped", "shape", "missing",
        "row", "columns", "two-rows", "noise"])
def test_each_kind_of_difference_is_named(a, kind, factor, words):
    """Manual's tensor against B: the kind, the factor of a scale, and the sentence."""
    found_kind, found_factor, sentence = kinds.classify(a, B, LIMIT, batch_size=6)
    assert found_kind == kind and words in sentence
    assert found_factor == (None if factor is None else pytest.approx(factor))


def test_entries_are_listed_when_neither_rows_nor_columns_are_spared():
    """One entry per row and per column doubled in an 8 x 8 tensor: every row and column has
    one, so only the entries are named, and they are fewer than half."""
    b = torch.rand(8, 8, dtype=torch.float64) + 1
    a = b.clone()
    a[torch.arange(8), torch.arange(8)] *= 2
    kind, _, sentence = kinds.classify(a, b, LIMIT, batch_size=8)
    assert kind == "partial" and "only some entries differ: 8 of the 64" in sentence


@pytest.mark.parametrize("side", ["manual", "torch"])
def test_non_finite_on_one_side_is_named_before_anything_else(side):
    """A NaN in one tensor only: non-finite, naming the side and the first entry; the same
    NaN on both sides is no difference of that kind."""
    bad = B.clone()
    bad[1, 2] = float("nan")
    a, b = (bad, B) if side == "manual" else (B, bad)
    kind, _, sentence = kinds.classify(a, b, LIMIT, batch_size=6)
    assert kind == "non-finite"
    assert sentence == f"{side}'s has 1 NaN entry (the first at [1, 2]) where the other " \
                       "side's is finite."
    assert kinds.classify(bad * 2, bad, LIMIT, batch_size=6)[0] == "scale"


def one_hot_gradients(shift: int, rows=range(6)) -> tuple[torch.Tensor, torch.Tensor,
                                                           torch.Tensor]:
    """(manual's, torch's, targets): dLoss/dlogits (6, 5) of a mean, manual's with the one-hot
    of the given rows at column y + shift."""
    generator = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(6, 5, generator=generator, dtype=torch.float64), dim=1)
    y = torch.randint(5, (6,), generator=generator)
    shifted = y.clone()
    shifted[list(rows)] = (y[list(rows)] + shift) % 5
    one_hot = torch.nn.functional.one_hot
    return (p - one_hot(shifted, 5)) / 6, (p - one_hot(y, 5)) / 6, y


@pytest.mark.parametrize(("shift", "column"), [(1, "y + 1"), (2, "y + 2"), (4, "y - 1")])
def test_a_one_hot_in_the_wrong_column_is_called_shifted(shift, column):
    """In every row the target's column and column y + k differ: shifted, naming y + k (y - 1
    for a shift of C - 1). Without the targets, it is only partial."""
    a, b, y = one_hot_gradients(shift)
    kind, _, sentence = kinds.classify(a, b, LIMIT, 6, targets=y)
    assert kind == "shifted" and sentence == (
        f"in every row the difference sits at the target's column y and at column {column}: "
        f"the one-hot is shifted (the target distribution's 1 at column {column}, not y?).")
    assert kinds.classify(a, b, LIMIT, 6)[0] != "shifted"


def test_a_one_hot_shifted_in_some_rows_only_or_by_different_amounts_is_not_shifted():
    """The twins: rows left right, or two shifts, are not the pattern."""
    a, b, y = one_hot_gradients(1, rows=range(3))
    assert kinds.classify(a, b, LIMIT, 6, targets=y)[0] == "partial"
    a2, _, _ = one_hot_gradients(2)
    mixed = torch.cat([a[:3], a2[3:]])
    assert kinds.classify(mixed, b, LIMIT, 6, targets=y)[0] != "shifted"


def test_shifted_needs_three_classes_and_one_constant_and_survives_label_smoothing():
    """With label smoothing the difference is (1 - eps) times the one-hot's: still shifted.
    The twins: two classes (any row's difference sums to 0 there), and a difference at the
    right two columns but of varying size, are not."""
    a, b, y = one_hot_gradients(1)
    smoothed = b + 0.9 * (a - b)
    assert kinds.classify(smoothed, b, LIMIT, 6, targets=y)[0] == "shifted"
    two = torch.tensor([[0.3, -0.3], [-0.2, 0.2]])
    assert kinds.classify(-two, two, LIMIT, 2, targets=torch.tensor([0, 1]))[0] != "shifted"
    varying = b + (a - b) * torch.linspace(1, 2, 6, dtype=torch.float64)[:, None]
    assert kinds.classify(varying, b, LIMIT, 6, targets=y)[0] != "shifted"


def test_minus_inf_on_one_side_says_log_of_0_and_plus_inf_does_not():
    """-inf where the other side is finite: the log of a probability that underflowed to 0.
    The twin: +inf gets no such words."""
    low, high = B.clone(), B.clone()
    low[1, 2], high[1, 2] = -torch.inf, torch.inf
    assert "the log of a probability that underflowed to 0" in kinds.classify(
        low, B, LIMIT, 6)[2]
    sentence = kinds.classify(high, B, LIMIT, 6)[2]
    assert sentence == "manual's has 1 inf entry (the first at [1, 2]) where the other side's " \
                       "is finite."
    loss = kinds.classify(torch.tensor(torch.inf), torch.tensor(2.3), LIMIT, 6)[2]
    assert loss == "manual's is inf where the other side's is finite: a loss of inf is minus " \
                   "the log of a probability that underflowed to 0?"


def test_the_grader_and_compare_use_the_same_words():
    """kinds.explain (the grader's) and kinds.make (compare.py's diagnosis) say the same
    after the tensor: "differs" against "differs first", then the kind and the sentence."""
    kind, factor, sentence = kinds.classify(B / 6, B, LIMIT, 6)
    diagnosis = kinds.make(1, "bias.grad", kind, sentence, factor)
    assert diagnosis["message"] == f"step 1, {kinds.explain('bias.grad', B / 6, B, LIMIT, 6)}" \
        .replace(" differs (", " differs first (")


def test_rounding_is_asked_after_shape_and_non_finite_and_before_scale():
    """classify consults the rounding function only for finite tensors of the same shape,
    and its sentence wins over a scale."""
    calls = []

    def rounding():
        calls.append(1)
        return "both round"

    assert kinds.classify(B.T, B, LIMIT, 6, rounding=rounding)[0] == "shape"
    assert calls == []
    assert kinds.classify(2 * B, B, LIMIT, 6, rounding=rounding) == (
        "rounding", None, "both round")
    assert kinds.classify(2 * B, B, LIMIT, 6, rounding=lambda: None)[0] == "scale"


# -- the per-step alarm -------------------------------------------------------------------------

@pytest.mark.parametrize(("a", "over"), [
    (torch.tensor([1.0, 2.0]), False),
    (torch.tensor([1.0, 2.0 + 1e-6]), False),
    (torch.tensor([1.0, 2.001]), True),
    (torch.tensor([1.0, float("nan")]), True),
    (torch.tensor([1.0, float("inf")]), True),
], ids=["equal", "within", "over", "nan", "inf"])
def test_exceeds_flags_a_tensor_over_the_limit_or_not_finite(a, over):
    """exceeds over the stats of (zeros, zeros) and (a, [1, 2]): the limit is relative."""
    stats = named_stats([("z", torch.zeros(3)), ("a", a)],
                        [("z", torch.zeros(3)), ("a", torch.tensor([1.0, 2.0]))])
    assert exceeds(stats, LIMIT) is over


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_named_stats_equal_the_formula_tensor_by_tensor(dtype):
    """named_stats gives, for each pair, max|a - b|, max|b|, max(|a - b| - rtol |b|) (the
    difference worked on in place must not change the first two), a scalar loss and an
    empty-free mix of shapes included."""
    generator = torch.Generator().manual_seed(3)
    b = [torch.randn(shape, generator=generator, dtype=dtype) for shape in ((), (7,), (3, 5))]
    a = [t + 1e-3 * torch.randn(t.shape, generator=generator, dtype=dtype) for t in b]
    rtol = 1.3e-6 if dtype == torch.float32 else 1e-7
    stats = named_stats([("", t) for t in a], [("", t) for t in b])
    for row, x, y in zip(stats, a, b, strict=True):
        diff = (x - y).abs()
        expected = torch.stack([diff.max(), y.abs().max(), (diff - rtol * y.abs()).max()])
        torch.testing.assert_close(row, expected, rtol=0, atol=0)
        torch.testing.assert_close(difference_stats(x, y), expected, rtol=0, atol=0)


# -- the order, the twin, and the gradient phase -----------------------------------------------

@pytest.mark.parametrize(("batchnorm", "expected"), [
    (False, ["logits", "layers.2.weight", "layers.2.bias", "hidden.relu", "hidden.linear",
             "layers.0.weight", "layers.0.bias"]),
    (True, ["logits", "layers.3.weight", "layers.3.bias", "hidden.relu", "hidden.batchnorm1d",
            "layers.1.weight", "layers.1.bias", "hidden.linear", "layers.0.weight"]),
], ids=["mlp", "mlp-batchnorm"])
def test_gradients_are_named_in_the_order_backward_computes_them(batchnorm, expected):
    """dLoss/dlogits, then the top layer's parameters, then dLoss/d(its input), and so on
    down; both packages' tensors line up in shape."""
    pair = learners(hidden=HIDDEN, batchnorm=batchnorm)
    both_gradients(pair, *batch())
    named = [learner.named_gradients() for learner in pair]
    assert [name for name, _ in named[0]] == expected
    assert [a.shape for _, a in named[0]] == [b.shape for _, b in named[1]]


def test_twin_copies_the_state_without_touching_the_random_stream():
    """A float64 twin of an Adam learner after one step: the same parameters, gradients and
    state; changing it leaves the original alone; torch's random stream is where it was."""
    pair = learners(hidden=HIDDEN, batchnorm=True, optimizer="Adam", options={"lr": 1e-3})
    x, y = batch()
    for learner in pair:
        learner.gradients(x, y)
        learner.step()
        learner.gradients(x, y)
    for learner in pair:
        before = torch.get_rng_state()
        twin = learner.twin(torch.float64)
        assert torch.equal(torch.get_rng_state(), before)
        for mine, theirs in zip(twin.params, learner.params, strict=True):
            assert mine.dtype == torch.float64 and torch.equal(mine, theirs.double())
            assert torch.equal(mine.grad, theirs.grad.double())
            state, source = twin.optimizer.state[mine], learner.optimizer.state[theirs]
            assert int(state["step"]) == int(source["step"]) == 1
            assert torch.equal(state["exp_avg"], source["exp_avg"].double())
        assert [b.tolist() for _, b in twin.named_buffers()] == [
            b.double().tolist() for _, b in learner.named_buffers()]
        with torch.no_grad():
            twin.params[0].add_(1.0)
        assert not torch.equal(twin.params[0], learner.params[0].double())


def test_a_right_step_is_not_over_the_limit_and_its_worst_tensor_is_rounding():
    """The alarm stays off on a right float32 step; asked anyway (as at the limit's edge),
    the diagnosis names its furthest tensor, as rounding."""
    pair = learners(hidden=HIDDEN)
    x, y = batch()
    both_gradients(pair, x, y)
    named = [learner.named_loss() + learner.named_gradients() for learner in pair]
    assert not exceeds(named_stats(*named), LIMIT)
    assert diagnosis.of_gradients(1, pair, x, y, LIMIT, independent=False)["kind"] == "rounding"


def forgets_the_batch_size(logits, targets, reduction="mean", label_smoothing=0.0):
    return RIGHT_GRAD(logits, targets, "sum", label_smoothing)


def forgets_the_target(logits, targets, reduction="mean", label_smoothing=0.0):
    """softmax(z) / N: the - q term left out, so only each example's target entry differs."""
    return manual.functional.softmax(logits) / len(logits)


RIGHT_GRAD = manual.functional.cross_entropy_grad
RIGHT_LOSS = manual.functional.cross_entropy


@pytest.mark.parametrize(("hidden", "patch", "tensor", "kind", "factor"), [
    (None, ("functional", "cross_entropy_grad", forgets_the_batch_size),
     "logits.grad", "scale", BATCH),
    (None, ("layers.Linear", "backward", linear_backward(bias=lambda g: g.mean(dim=0))),
     "bias.grad", "scale", 1 / BATCH),
    (HIDDEN, ("layers.Linear", "backward", linear_backward(bias=lambda g: g.mean(dim=0))),
     "layers.2.bias.grad", "scale", 1 / BATCH),
    (None, ("layers.Linear", "backward", linear_backward(weight=lambda s, g: -(g.T @ s.input))),
     "weight.grad", "scale", -1),
    (HIDDEN, ("functional", "cross_entropy_grad", forgets_the_target),
     "logits.grad", "partial", None),
], ids=["no-N", "bias-mean", "mlp-top-bias-mean", "sign", "no-target"])
def test_seeded_bugs_are_found_where_they_start(monkeypatch, hidden, patch, tensor, kind,
                                                factor):
    """Each bug, on one float32 step: the first tensor over the limit in backward's order,
    its kind and factor. The MLP's bias bug is found at the top layer, where backward meets
    it first."""
    where, name, value = patch
    monkeypatch.setattr(f"manual.{where}.{name}", value)
    pair = learners(hidden=hidden)
    x, y = batch()
    both_gradients(pair, x, y)
    found = diagnosis.of_gradients(7, pair, x, y, LIMIT, independent=False)
    assert (found["step"], found["tensor"], found["kind"]) == (7, tensor, kind)
    assert found["factor"] == (None if factor is None else pytest.approx(factor, rel=1e-4))
    assert found["message"].startswith(f"step 7, {kinds.label(tensor)} differs first "
                                       f"({kind}): ")
    if kind == "partial":
        assert f"only some entries differ: {BATCH} of the {BATCH * NUM_CLASSES}" in \
            found["message"]


def test_a_relu_tie_within_rounding_is_rounding_and_a_far_one_is_not():
    """Flip one ReLU gate on the manual side: within float32 rounding of 0 (relative 3e-8),
    the tensors below the ReLU are excused; far from 0 (0.5) they are not; the ReLU's own
    output gradient, computed above it, never is; nor is a tie when the gradient the ReLU
    passes on also differs away from the flipped gate."""
    pair = learners(hidden=HIDDEN)
    x, y = batch()
    both_gradients(pair, x, y)
    relu = [dict(learner.named_hidden_outputs())["hidden.relu"] for learner in pair]
    names = ["loss"] + [name for name, _ in pair[0].named_gradients()]
    below, above = names.index("hidden.linear"), names.index("hidden.relu")
    row, unit = (relu[1] == 0).nonzero()[0].tolist()
    largest = relu[1].max().item()
    for distance, excused in ((3e-8, True), (0.5, False)):
        relu[0].detach()[row, unit] = distance * largest
        assert (reference.relu_tie(pair, below) is not None) is excused
        assert reference.relu_tie(pair, above) is None
    relu[0].detach()[row, unit] = 3e-8 * largest  # a tie again, but the gradient it passes on
    passed = dict(pair[0].named_gradients())["hidden.linear"]
    passed[(row + 1) % BATCH] += 1.0  # differs in another example too: not the tie's doing
    assert reference.relu_tie(pair, below) is None


def test_drifted_parameters_are_named_before_a_relu_tie_they_brought(monkeypatch):
    """--independent: each side within float32 rounding of the exact math from its own
    parameters, the exact math from the two 1e-3 apart, and a ReLU gate open on one side only
    (a tie, here by monkeypatch). Parameters 1e-3 apart have drifted: the gate is open in
    float64 too, one more consequence, and the sentence says drift, with its advice. The
    twins: parameters no further apart than rounding, and one and the same state (not
    independent, both references torch's), where the same tie is the sentence."""
    monkeypatch.setattr(reference, "relu_tie", lambda learners, index: 2e-6)
    exact = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    drifted = exact * (1 + 1e-3)
    a, b = drifted.float(), exact.float()
    tie = ("not an error: a ReLU input within float32 rounding of 0 (at most 2e-06 of the "
           "layer's largest output)")
    pair = learners(hidden=HIDDEN)
    assert reference.parameter_drift(pair) == 0
    said = reference.rounding_sentence(pair, "w", 1, a, b, {"w": [drifted, exact]}, LIMIT,
                                       independent=True)
    assert said.startswith(tie)  # a step's rounding apart (here none): a tie is a tie
    with torch.no_grad():
        pair[0].params[0].mul_(1 + 1e-3)
    said = reference.rounding_sentence(pair, "w", 1, a, b, {"w": [drifted, exact]}, LIMIT,
                                       independent=True)
    assert "the parameters have drifted apart (max rel diff 1.0e-03)" in said
    assert "try a smaller --lr" in said
    said = reference.rounding_sentence(pair, "w", 1, b, b, {"w": [exact, exact]}, LIMIT,
                                       independent=False)
    assert said.startswith(tie)


def test_float64_reference_of_a_right_step_is_rounding_on_both_sides():
    """float32 step 1 against torch's float64: both sides within 1e-6; a manual gradient
    scaled by 1.01 is 1e-2 off while torch stays within rounding."""
    pair = learners(hidden=HIDDEN)
    x, y = batch()
    both_gradients(pair, x, y)
    errors = reference.float64_errors(pair, x, y)
    assert set(errors["tensors"]) == {"loss", *(n for n, _ in pair[0].named_gradients())}
    assert 0 < errors["manual"] < 1e-6 and 0 < errors["torch"] < 1e-6
    pair[0].params[0].grad.mul_(1.01)
    assert errors["torch"] == reference.float64_errors(pair, x, y)["torch"]
    assert reference.float64_errors(pair, x, y)["manual"] == pytest.approx(1e-2, rel=1e-3)


# -- the update, replayed; and a step that failed ----------------------------------------------

def uphill_step(self):
    for param, grad in self.gradients():
        param.add_(grad, alpha=self.lr)


def test_a_broken_update_is_replayed_and_classified(monkeypatch):
    """An SGD that steps uphill: replayed from torch's state, manual's change of each
    parameter is -1 x torch's. Without the bug, the replay agrees: in the lock step that is
    'other' (the difference depended on the step), for independent runs 'rounding'."""
    pair = learners()
    x, y = batch()
    both_gradients(pair, x, y)
    found = replay.of_update(3, "param", "weight", pair, LIMIT, independent=False)
    assert (found["kind"], found["tensor"]) == ("other", "weight after the update")
    found = replay.of_update(3, "param", "weight", pair, LIMIT, independent=True)
    assert found["kind"] == "rounding" and "try a smaller --lr" in found["message"]
    found = replay.of_update(1, "param", "weight", pair, LIMIT, independent=True)
    assert found["kind"] == "rounding" and "smaller --lr" not in found["message"]
    monkeypatch.setattr(manual.optim.SGD, "step", uphill_step)
    pair = learners()
    both_gradients(pair, x, y)
    found = replay.of_update(3, "param", "weight", pair, LIMIT, independent=False)
    assert (found["kind"], found["factor"]) == ("scale", -1)
    assert "manual's update of weight (after - before) is -1 x torch's" in found["message"]
    assert all(learner.params[0].grad is not None for learner in pair)  # the learners untouched


def test_a_gradient_assigned_transposed_is_recovered_from_the_failed_step(monkeypatch):
    """torch refuses to store a transposed weight gradient; the replay records it anyway and
    names it: shape, at weight.grad, and its transpose is torch's."""
    monkeypatch.setattr(manual.layers.Linear, "backward",
                        linear_backward(weight=lambda self, g: self.input.T @ g))
    pair = learners()
    x, y = batch()
    with pytest.raises(RuntimeError, match="assign a gradient of size"):
        pair[0].gradients(x, y)
    found = replay.of_failure(1, pair, x, y, RuntimeError("refused"), LIMIT)
    assert (found["tensor"], found["kind"]) == ("weight.grad", "shape")
    assert f"manual's is ({IN_FEATURES}, {NUM_CLASSES}), torch's ({NUM_CLASSES}, " \
           f"{IN_FEATURES}), and manual's transposed (a.T) equals torch's" in found["message"]


@pytest.mark.parametrize(("a", "b", "kind", "factor", "words"), [
    (torch.zeros(6, 4, dtype=torch.float64), B, "scale", 0.0,
     "manual's is all zeros where torch's is not: was it ever computed?"),
    (1.00019 * B, B, "scale", 1.00019, "1.00019 x torch's"),
    (B[:4].T.contiguous(), B[:4], "shape", None, "the shapes agree only because the matrix is "
     "square"),
    (torch.tensor(float("nan"), dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64),
     "non-finite", None, "manual's is NaN where the other side's is finite."),
    (changed(entries=[(1, 1)]) * torch.where(B > 0.5, float("nan"), 1.0),
     B * torch.where(B > 0.5, float("nan"), 1.0), "partial", None, "only some rows differ: 1 "),
    (B * torch.where(B > 0.5, float("nan"), 1.0), B * torch.where(B > 0.5, float("nan"), 1.0),
     "non-finite", None, "both sides are NaN or infinite at the same entries"),
], ids=["zeros", "barely-scaled", "square-transposed", "scalar-nan", "nan-alike-and-a-row",
        "nan-alike"])
def test_edge_cases_get_their_own_words(a, b, kind, factor, words):
    found_kind, found_factor, sentence = kinds.classify(a, b, LIMIT, batch_size=6)
    assert found_kind == kind and words in sentence
    assert found_factor == (None if factor is None else pytest.approx(factor))


def test_a_failure_before_a_tensor_names_the_error_and_a_loss_of_the_wrong_shape_its_shape(
        monkeypatch):
    """A manual loss that raises: the loss, 'other', with the error's type and text. A loss
    left per example, (N,) against (): the loss, 'shape', and how to fix it."""
    pair = learners()
    x, y = batch()

    def raises(*args, **kwargs):
        raise IndexError("boom")

    monkeypatch.setattr(manual.functional, "cross_entropy", raises)
    found = replay.of_failure(4, pair, x, y, IndexError("boom"), LIMIT)
    assert (found["step"], found["tensor"], found["kind"]) == (4, "loss", "other")
    assert re.search(r"the manual code failed before computing it: IndexError \(at "
                     r"(.*/)?manual/train\.py line \d+, in forward_backward\): boom$",
                     found["message"])
    right = RIGHT_LOSS
    monkeypatch.setattr(manual.functional, "cross_entropy",
                        lambda logits, targets, **kwargs: right(logits, targets, "none"))
    found = replay.of_failure(4, pair, x, y, ValueError("shape"), LIMIT)
    assert (found["tensor"], found["kind"]) == ("loss", "shape")
    assert f"manual's is ({BATCH},), torch's ()" in found["message"]



def test_the_replay_takes_the_current_learning_rate_and_a_schedule_that_differs_is_named():
    """A twin's optimizer takes its learner's current lr (the schedule's); if the two
    learners' lrs differ, the update's diagnosis says so before anything else."""
    pair = []
    for package in (manual, torch_impl):
        torch.manual_seed(0)
        pair.append(Learner(package, IN_FEATURES, NUM_CLASSES, {"lr": 0.1}, anneal_steps=10))
    x, y = batch()
    for learner in pair:
        learner.gradients(x, y)
        learner.step()
    assert pair[0].lr() == pytest.approx(pair[1].lr()) and pair[1].lr() < 0.1
    assert pair[1].twin().lr() == pair[1].lr()
    pair[0].optimizer.lr *= 1.1
    found = replay.of_update(2, "param", "weight", pair, LIMIT, independent=True)
    assert found["kind"] == "other" and "the learning rates differ" in found["message"]


def slightly_longer_step(self):
    """Broken, below the limit: each step 1e-5 longer than it should be."""
    for param, grad in self.gradients():
        param.add_(grad, alpha=-self.lr * (1 + 1e-5))


def test_drift_is_only_claimed_when_the_replayed_updates_agree_to_rounding(monkeypatch):
    """An update 1e-5 too long agrees within the 1e-4 limit, but not to rounding: it may be
    what made independent runs part, so no 'try a smaller --lr'."""
    monkeypatch.setattr(manual.optim.SGD, "step", slightly_longer_step)
    pair = learners()
    both_gradients(pair, *batch())
    found = replay.of_update(5, "param", "weight", pair, LIMIT, independent=True)
    assert found["kind"] == "other" and "smaller --lr" not in found["message"]
    assert "accumulated over steps" in found["message"]


def test_the_float64_line_says_rounding_only_when_every_tensor_is_rounding():
    """report.reference_line: both within rounding -> 'close but not bit-identical'; manual's
    bias 10x further off than torch's -> named, and no such claim."""
    both = {"manual": 3e-7, "torch": 2e-7, "tensors": {"loss": [1e-8, 1e-7],
                                                        "bias": [3e-7, 2e-7]}}
    assert "that is why they are close but not bit-identical" in report.reference_line(both)
    off = {"manual": 5e-6, "torch": 2e-7, "tensors": {"loss": [1e-8, 1e-7],
                                                       "bias": [5e-6, 2e-7]}}
    line = report.reference_line(off)
    assert "Manual's bias more than 10 times further off than torch's" in line
    assert "bit-identical" not in line


# -- the CNN's kinds ---------------------------------------------------------------------------

K = torch.randn(3, 3, 5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


@pytest.mark.parametrize(("a", "kind", "words"), [
    (K.flip(-2, -1), "permuted", "manual's equals torch's rotated by 180 degrees"),
    (K.transpose(0, 1), "permuted",
     "manual's with its first two dimensions swapped (a.transpose(0, 1)) equals torch's; the "
     "shapes agree only because both are 3: the in and out channels are swapped"),
    (K.flip(-1), "other", "no simple pattern"),  # a mirror image is not a rotation
    (K.rot90(1, (-2, -1)), "other", "no simple pattern"),  # nor a quarter turn
], ids=["rotated-180", "channels-swapped", "mirrored", "quarter-turn"])
def test_a_kernel_rotated_or_with_channels_swapped_is_permuted(a, kind, words):
    """A weight gradient (out, in, k, k) rotated by 180 degrees, the true convolution's, or with
    in and out channels swapped: permuted. A mirror image or a quarter turn, neither of which
    a convolution makes, is not."""
    found, _, sentence = kinds.classify(a, K, LIMIT, batch_size=4)
    assert (found, words in sentence) == (kind, True), sentence


def test_in_and_out_channels_swapped_in_shape_are_named_from_values_and_from_shapes():
    """(in, out, k, k) where torch's is (out, in, k, k): the permutation that matches, from the
    values; from the shapes alone (a .grad torch refused), the same advice. A shape that is
    no permutation of torch's is named as such."""
    b = K[:2]  # (2, 3, 5, 5)
    sentence = kinds.shape_sentence(b.transpose(0, 1), b, LIMIT)
    assert ("manual's permuted (a.permute(1, 0, 2, 3)) equals torch's: the in and out channels "
            "are swapped") in sentence
    assert "swapped" not in kinds.shape_sentence(torch.randn(3, 2, 5, 5), b, LIMIT)
    assert kinds.shapes_sentence((3, 2, 5, 5), (2, 3, 5, 5)).endswith(
        "its first two dimensions swapped: the in and out channels are swapped (nn.Conv2d's "
        "weight is (out, in, k, k)).")
    assert kinds.shapes_sentence((3, 2, 5, 4), (2, 3, 5, 5)) == \
        "manual's is (3, 2, 5, 4), torch's (2, 3, 5, 5)."


def test_a_flatten_in_another_order_is_named_by_its_order():
    """A Flatten's output in (H, W, C) order against torch's (C, H, W): permuted, naming the
    order; without the layout it is only a partial or other difference, and a row shuffled at
    random is no order of (C, H, W)."""
    images = torch.randn(4, 3, 2, 5, generator=torch.Generator().manual_seed(4),
                         dtype=torch.float64)
    b = images.flatten(1)
    a = images.permute(0, 2, 3, 1).flatten(1)
    kind, _, sentence = kinds.classify(a, b, LIMIT, batch_size=4, layout=(3, 2, 5))
    assert kind == "permuted" and "flattened in (H, W, C) order, torch's in (C, H, W)" in sentence
    assert kinds.classify(a, b, LIMIT, batch_size=4)[0] != "permuted"
    shuffled = b[:, torch.randperm(30, generator=torch.Generator().manual_seed(5))]
    assert kinds.classify(shuffled, b, LIMIT, batch_size=4, layout=(3, 2, 5))[0] != "permuted"


def test_gradients_that_differ_only_at_tied_maxima_are_named_ties():
    """The input gradient of MaxPool2d(2) sent to every tied maximum (manual's) against torch's
    first maximum: partial, the ties named; the same difference anywhere else is not."""
    from lockstep.ties import tied_maxima
    x = torch.tensor([[[[0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 2.0, 0.5],
                        [3.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]])
    torch_side = torch.zeros_like(x)
    torch_side[0, 0, 0, 0] = torch_side[0, 0, 0, 3] = torch_side[0, 0, 2, 0] = 1.0
    torch_side[0, 0, 2, 2] = 1.0
    every_tie = torch_side.clone()
    every_tie[0, 0, 0:2, 0:2] = 1.0  # all four zeros of the first window
    every_tie[0, 0, 2:4, 2:4] = 1.0
    ties = tied_maxima(x, 2)
    kind, _, sentence = kinds.classify(every_tie, torch_side, LIMIT, batch_size=1, ties=ties)
    assert kind == "partial" and sentence.startswith(
        "only entries at tied maxima of max pooling differ: 6, each one of several equal largest "
        "values of its window.") and "did you send the gradient to every tied maximum?" in sentence
    elsewhere = torch_side.clone()
    elsewhere[0, 0, 1, 3] = 1.0  # 0.5, no maximum of its window
    assert "tied maxima" not in kinds.classify(elsewhere, torch_side, LIMIT, batch_size=1,
                                               ties=ties)[2]


@pytest.mark.parametrize(("broken", "index", "tensor", "kind", "words"), [
    ("HWCFlatten", 6, "hidden.flatten.6", "permuted", "flattened in (H, W, C) order"),
    ("EveryTieMaxPool2d", 2, "hidden.relu.1.grad", "partial",
     "did you send the gradient to every tied maximum?"),
    ("FlippedKernelConv2d", 3, "layers.3.weight.grad", "permuted", "rotated by 180 degrees"),
], ids=["flatten-hwc", "every-tie", "flipped-kernel"])
def test_a_cnn_twin_is_diagnosed_at_its_tensor_without_mnist(broken, index, tensor, kind,
                                                              words):
    """The CNN's broken twins (tests/test_conv.py) in place of one layer of the manual CNN, on
    8 x 8 images blank but for a corner (ties: the first convolution's bias over the blank):
    the diagnosis names the tensor where the mistake starts, a forward output for the Flatten;
    with the right layers, nothing differs."""
    import tests.test_conv as conv
    pair = conv.twin_learners()
    x = torch.zeros(6, 64, dtype=torch.float64)
    x.view(6, 8, 8)[:, :3, :3] = torch.rand(6, 3, 3, generator=torch.Generator().manual_seed(0),
                                            dtype=torch.float64)
    y = torch.arange(6) % 3
    both_gradients(pair, x, y)
    named = [learner.named_hidden_outputs() + learner.named_loss() + learner.named_gradients()
             for learner in pair]
    assert all(kinds.agrees(a, b, 1e-10) for (_, a), (_, b) in zip(*named, strict=True))
    layer = pair[0].model.layers[index]
    twin = getattr(conv, broken)(*([layer.weight.shape[1], layer.weight.shape[0],
                                    layer.kernel_size[0]] if broken.endswith("Conv2d") else
                                   [layer.kernel_size] if broken.endswith("Pool2d") else []),
                                 **({"padding": layer.padding} if broken.endswith("Conv2d")
                                    else {}))
    if broken.endswith("Conv2d"):
        twin.weight, twin.bias = layer.weight, layer.bias
    pair[0].model.layers[index] = twin
    both_gradients(pair, x, y)
    found = diagnosis.of_gradients(1, pair, x, y, 1e-10, False)
    assert (found["tensor"], found["kind"]) == (tensor, kind) and words in found["message"]
