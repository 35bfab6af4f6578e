"""The two plots that show what can differ in a lock step: weights.png, the first layer's weight
gradients at the step where the two sides differed most (lockstep.worst), and confusion.png's
list of the test images the two learners classify differently. No MNIST needed."""

from types import SimpleNamespace

import matplotlib
import pytest
import torch

from lockstep import plots
from lockstep.checks import named_stats
from lockstep.report import History
from lockstep.worst import WorstStep
from tests.test_conv import twin_learners
from tests.test_diagnosis import batch, learners

matplotlib.use("agg")


def step_of(worst: WorstStep, step: int, manual: torch.Tensor, torch_side: torch.Tensor) -> None:
    """One step's update: the gradients named as softmax regression's."""
    named = [[("logits", torch.zeros(2, 3)), ("weight", side)] for side in (manual, torch_side)]
    worst.update(step, named_stats(*named), *named)


def test_the_worst_step_is_kept_and_a_smaller_difference_later_does_not_replace_it():
    reference = torch.ones(3, 4)
    worst = WorstStep()
    step_of(worst, 1, reference * 1.001, reference)
    step_of(worst, 2, reference * 1.1, reference)  # the worst
    step_of(worst, 3, reference * 1.01, reference)  # the twin: smaller, so step 2 stays
    found = worst.found()
    assert found["step"] == 2 and abs(found["relative"] - 0.1) < 1e-6
    assert torch.allclose(found["manual"], reference.double() * 1.1)
    assert torch.equal(found["torch"], reference.double())


def test_a_nan_gradient_counts_as_the_worst():
    worst = WorstStep()
    step_of(worst, 1, torch.ones(3, 4) * 2, torch.ones(3, 4))
    step_of(worst, 2, torch.full((3, 4), float("nan")), torch.ones(3, 4))
    assert worst.found()["step"] == 2


def learner(predictions: torch.Tensor) -> SimpleNamespace:
    return SimpleNamespace(predict=lambda x: predictions)


def texts(figure) -> str:
    return " ".join(text.get_text() for ax in figure.axes for text in ax.texts) + " " + \
        figure._suptitle.get_text()


def test_confusion_says_there_is_no_image_to_show_or_shows_those_that_differ():
    """Predictions alike: one matrix and a line saying so (for a re-synchronized run, why).
    The twin: two that differ get an image each, with both predictions."""
    labels = torch.arange(12) % 10
    data = SimpleNamespace(test_x=torch.rand(12, 784), test_y=labels)
    history = History()
    history.diagnosis = {"message": "step 1, ..."}  # a mismatch: the manual learner re-synced
    alike = plots.confusion([learner(labels), learner(labels)], data, history)
    assert "classify all 12 test images\nalike" in texts(alike) and len(alike.axes) == 2
    assert "re-synchronized to torch every step" in texts(alike)
    other = labels.clone()
    other[[3, 7]] = 0
    differ = plots.confusion([learner(other), learner(labels)], data, History())
    assert "the 2 the two learners classify differently" in texts(differ)
    titles = [ax.get_title() for ax in differ.axes]
    assert "label 3\nmanual 0\ntorch 3" in titles and "label 7\nmanual 0\ntorch 7" in titles


@pytest.mark.parametrize("hidden", [None, 8], ids=["softmax", "mlp"])
def test_the_first_layer_is_found_by_the_names_the_lock_step_compares(hidden):
    """Softmax regression's "weight", the MLP's "layers.0.weight": the worst step keeps it,
    of the shape of the first layer (the MLP's is (hidden, 784-like in_features))."""
    pair = learners(hidden=hidden)
    x, y = batch()
    for learner in pair:
        learner.gradients(x, y)
    named = [learner.named_gradients() for learner in pair]
    worst = WorstStep()
    worst.update(1, named_stats(*named), *named)
    found = worst.found()
    assert found is not None and found["step"] == 1
    assert found["manual"].shape == pair[0].parameters()[0].shape
    renamed = [[(f"linear.{name}", tensor) for name, tensor in side] for side in named]
    other = WorstStep()  # the twin: no tensor of those names, nothing kept, and no error
    other.update(1, named_stats(*named), *renamed)
    assert other.found() is None


def test_the_cnn_kernels_are_drawn_as_kernels_and_its_feature_maps_per_convolution():
    """weights.png for a CNN: each first-layer kernel's gradient as a 5 x 5 image (not 28 x 28);
    features.png: the digit and the kernels, then one row per convolution with a map per
    channel, titled with manual's difference. The twin: manual's kernels doubled, and the
    title no longer says 0."""
    pair = list(twin_learners())  # tests/test_conv.py's CNN learners, on 8 x 8 images
    for learner in pair:
        learner.gradients(torch.rand(6, 64, dtype=torch.float64), torch.arange(6) % 3)
    named = [learner.named_gradients() for learner in pair]
    worst = WorstStep()
    worst.update(1, named_stats(*named), *named)
    history = SimpleNamespace(worst=worst.found())
    figure = plots.weights(history)
    shapes = {ax.get_images()[0].get_array().shape for ax in figure.axes if ax.get_images()}
    assert shapes == {(5, 5)} and "kernels 0-1, 5x5 each," in texts(figure)
    data = SimpleNamespace(test_x=torch.rand(2, 64, dtype=torch.float64),
                           test_y=torch.tensor([1, 2]))
    maps = plots.features(pair, data)
    titles = [ax.get_title(loc="left") for ax in maps.axes if ax.get_title(loc="left")]
    assert titles == ["the first layer's 2 kernels, 5x5 (red +, blue -)",
                      "hidden.conv2d.0: channels 0-1 of 2, 8x8 each; max |manual - torch| = "
                      "0.0e+00",
                      "hidden.conv2d.3: channels 0-2 of 3, 4x4 each; max |manual - torch| = "
                      "0.0e+00"]
    with torch.no_grad():
        pair[0].parameters()[0].mul_(2)  # the twin: manual's kernels no longer torch's
    titles = [ax.get_title(loc="left") for ax in plots.features(pair, data).axes]
    assert "hidden.conv2d.0: channels 0-1 of 2, 8x8 each; max |manual - torch| = 0.0e+00" \
        not in titles and any(title.startswith("hidden.conv2d.0") for title in titles)
