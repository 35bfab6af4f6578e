"""The two plots that show what can differ in a lock step: weights.png, the first layer's weight
gradients at the step where the two sides differed most (lockstep.worst), and confusion.png's
right half, the test images where the two learners differ most; predictions.png's title. No
MNIST needed."""

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


def learner(logits: torch.Tensor) -> SimpleNamespace:
    """A learner of fixed logits (N, C), whatever the images, with a package's softmax."""
    functional = SimpleNamespace(softmax=lambda z: z.softmax(dim=-1))
    return SimpleNamespace(logits=lambda x: logits, package=SimpleNamespace(functional=functional))


def one_hot(classes: torch.Tensor) -> torch.Tensor:
    """Logits (N, 10) that predict classes (N,), sure of it: 5 for the class, 0 elsewhere."""
    return torch.nn.functional.one_hot(classes, 10).double() * 5


def images(n: int) -> SimpleNamespace:
    """n random test images of 784 pixels, labelled 0-9 in turn."""
    return SimpleNamespace(test_x=torch.rand(n, 784), test_y=torch.arange(n) % 10)


def texts(figure) -> str:
    return " ".join(text.get_text() for ax in figure.axes for text in ax.texts) + " " + \
        figure._suptitle.get_text()


def shown(figure) -> list[int]:
    """The test images confusion's right half shows, in order: "image 17, ..." -> 17."""
    return [int(ax.get_title().split(",")[0].removeprefix("image "))
            for ax in figure.axes if ax.get_title().startswith("image ")]


def test_predictions_says_how_its_images_were_chosen_and_the_real_error():
    """30 test images, 3 misclassified: all 3 shown among 24, and the title says they were
    mixed in on purpose and gives the true share, 3 of 30 (90.00 % correct). The twin: 6
    misclassified, and the title's counts follow."""
    data = images(30)
    for wrong, correct in ((3, "90.00%"), (6, "80.00%")):
        predicted = data.test_y.clone()
        predicted[:wrong] = (predicted[:wrong] + 1) % 10
        figure = plots.predictions([learner(one_hot(predicted))] * 2, data)
        title = figure._suptitle.get_text()
        assert f"the first {wrong} it gets wrong mixed in on purpose" in title
        assert f"not the error rate: manual misclassifies {wrong} of the 30 test images " \
               f"({correct} correct)" in title
        assert sum(ax.title.get_color() == "red" for ax in figure.axes) == wrong


def test_predictions_without_a_mistake_says_so():
    data = images(30)
    title = plots.predictions([learner(one_hot(data.test_y))] * 2, data)._suptitle.get_text()
    assert "The first 24 test images: manual misclassifies none of them, and 0 of the 30 " \
           "test images in all (100.00% correct)" in title and "mistakes" not in title


def test_confusion_shows_the_images_whose_probabilities_differ_most_when_all_agree():
    """Predictions alike: the right half still shows 24 images (no "no image" line), by |dp|
    from the largest down: manual's logit of the label nudged by 1e-3 * i on image i, so 29
    first. The
    twin: the nudge only on image 5, and image 5 comes first, the others (|dp| 0) in order."""
    data = images(30)
    logits = one_hot(data.test_y)
    nudge = one_hot(data.test_y) * 2e-4 * torch.arange(30)[:, None]  # 1e-3 * i on the label
    alike = plots.confusion([learner(logits + nudge), learner(logits)], data, History())
    assert shown(alike) == list(range(29, 5, -1)) and "no image" not in texts(alike)
    assert "They classify all 30 alike (0 differently), so these are the 24 whose " \
           "probabilities differ most" in texts(alike)
    only = torch.zeros_like(logits)
    only[5, 5] = 1e-3
    once = plots.confusion([learner(logits + only), learner(logits)], data, History())
    assert shown(once) == [5, *range(5), *range(6, 24)]
    assert "|dp| 0.0e+00" in [ax.get_title().split("\n")[-1] for ax in once.axes]


def test_confusion_shows_those_classified_differently_first():
    """Images 3 and 7 classified differently (a near tie: manual says 0, torch the label),
    with a |dp| smaller than image 21's, whose prediction agrees: 3 and 7 come first, in red,
    and the title counts them; a re-synchronized run says so. The twin: all alike, and image
    21 comes first."""
    data = images(30)
    logits = one_hot(data.test_y)
    logits[[3, 7], 0] = 4.999  # just under the label's 5
    manual = logits.clone()
    manual[[3, 7], 0] = 5.001  # just over it: manual's prediction is 0
    manual[21, 2] += 3  # a larger |dp|, but torch's prediction still
    history = History()
    history.diagnosis = {"message": "step 1, ..."}  # a mismatch: the manual learner re-synced
    differ = plots.confusion([learner(manual), learner(logits)], data, history)
    assert shown(differ)[:3] == [3, 7, 21]
    assert "They classify 2 of the 30 differently (red, first), then the 22 whose" \
        in texts(differ) and "re-synchronized to torch every step" in texts(differ)
    titles = [ax.get_title() for ax in differ.axes]
    assert any(title.startswith("image 3, label 3\nmanual 0, torch 3\n|dp| ") for title in titles)
    assert sum(ax.title.get_color() == "red" for ax in differ.axes) == 2
    manual[[3, 7], 0] = 4.999  # the twin
    alike = plots.confusion([learner(manual), learner(logits)], data, History())
    assert shown(alike)[0] == 21 and "re-synchronized" not in texts(alike)


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
