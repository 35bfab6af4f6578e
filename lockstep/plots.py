"""The PNG plots compare.py writes: curves, gradient differences per tensor, the first layer's
weight gradients where the two sides differed most, sample predictions, confusion, and for
the CNN one test digit's feature maps. The notebooks draw them too (notebook_pngs), and the
learned weights (templates)."""

import io
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

from common.data import NUM_CLASSES, Splits
from lockstep.checks import REL
from lockstep.report import NAMES, History

STYLE = {"manual": dict(color="tab:blue", marker="o", linestyle="-"),
         "torch": dict(color="tab:orange", marker="x", linestyle="--")}


def save_all(out: Path, learners: list, data: Splits, history: History) -> list[Path]:
    """Write the five plots into `out`, six for the CNN; returns their paths."""
    plt.switch_backend("agg")  # files only, no window: works on servers and in CI
    figures = {"curves.png": curves(history), "gradients.png": gradients(history),
               "weights.png": weights(history),
               "predictions.png": predictions(learners, data),
               "confusion.png": confusion(learners, data, history)}
    if learners[1].image_shape is not None:
        figures["features.png"] = features(learners, data)
    for name, figure in figures.items():
        figure.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
    return [out / name for name in figures]


def notebook_pngs() -> None:
    """In a notebook, after %matplotlib inline: show each figure as a PNG of 256 colours.

    The picture looks the same, in less than half the bytes of matplotlib's own PNG, which
    keeps each notebook, stored with its outputs, under 400 KB."""
    from IPython import get_ipython  # present wherever a notebook runs
    get_ipython().display_formatter.formatters["image/png"].for_type(plt.Figure, png_256)


def png_256(figure: plt.Figure) -> bytes:
    """The figure as a PNG, its colours quantized to a palette of 256."""
    from PIL import Image  # matplotlib's own dependency
    drawn, small = io.BytesIO(), io.BytesIO()
    figure.savefig(drawn, format="png", bbox_inches="tight")
    Image.open(drawn).convert("RGB").quantize(256).save(small, format="png", optimize=True)
    return small.getvalue()


def curves(history: History) -> plt.Figure:
    """Train loss and validation accuracy per epoch, overlaid; gradient differences per step."""
    figure, (loss_ax, accuracy_ax, grad_ax) = plt.subplots(1, 3, figsize=(15, 4))
    for name in NAMES:
        epochs = range(1, len(history.train_loss[name]) + 1)
        loss_ax.plot(epochs, history.train_loss[name], label=name, **STYLE[name])
        accuracy_ax.plot(epochs, [100 * a for a in history.val_accuracy[name]], label=name,
                         **STYLE[name])
    loss_ax.set(title="Training loss (mean over the epoch)", xlabel="epoch", ylabel="cross-entropy")
    epochs = len(history.train_loss["torch"])
    for ax in (loss_ax, accuracy_ax):  # epochs are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10, min_n_ticks=1))
        ax.set_xlim(0.5, epochs + 0.5)
    loss_ax.ticklabel_format(axis="y", useOffset=False)
    accuracy_ax.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy (%)")
    worst = history.all_steps("grad")[..., REL].amax(dim=1)
    grad_ax.semilogy(worst.clamp_min(1e-18).numpy(), lw=0.6, color="tab:purple",
                     label=f"worst of the {len(history.grad_names)} gradients compared")
    grad_ax.set(title="Gradient difference, manual vs torch, per step", xlabel="step",
                ylabel="max|manual - torch| / max|torch|")
    grad_ax.annotate("0 (bit-identical) is drawn at 1e-18; each tensor: gradients.png",
                     (0.02, 0.02), xycoords="axes fraction", fontsize=8)
    for ax in (loss_ax, accuracy_ax, grad_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right" if ax is grad_ax else "best")
    figure.suptitle("Manual and torch training curves lie on top of each other")
    figure.tight_layout()
    return figure


def gradients(history: History) -> plt.Figure:
    """Per named tensor, its gradient difference at every step, one small panel each."""
    stats, names = history.all_steps("grad"), history.grad_names
    columns = min(len(names), 4)
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.75 * columns, 2.75 * rows), sharex=True,
                                sharey=True, squeeze=False)
    for ax, (i, name) in zip(axes.flat, enumerate(names), strict=False):  # spare panels: hidden
        relative = stats[:, i, REL]
        ax.semilogy(relative.clamp_min(1e-18).numpy(), lw=0.5, color="tab:purple")
        label = name if name.startswith("hidden.") else f"{name}.grad"
        ax.set_title(f"{label}: max {relative.max():.1e}", fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for ax in axes[:, 0]:
        ax.set_ylabel("max|manual - torch| / max|torch|", fontsize=8)
    hidden = any(name.startswith("hidden.") for name in names)
    figure.suptitle("Gradient difference per step, tensor by tensor, in the order backward "
                    "computes them" + (
        "\nhidden.x: dLoss/d(output of the hidden layer x)" if hidden else ""))
    figure.tight_layout()
    return figure


def weights(history: History) -> plt.Figure:
    """The first layer's weight gradient at the step where manual's and torch's differed most
    (lockstep.worst), one 28x28 image per row of dLoss/dW: manual, torch, difference.

    Softmax regression: each class's 784 weights. MLP: the first 16 hidden units'. CNN: the
    first 16 kernels, k x k each. The weights themselves would show no difference: the lock
    step gives the manual learner torch's after every step, so the gradients are what it
    tests.
    """
    worst = history.worst
    units = shown_units(worst["manual"])
    manual_g, torch_g = worst["manual"][:units], worst["torch"][:units]
    figure, axes = plt.subplots(3, units, figsize=(15, 5), squeeze=False)  # as wide as curves
    both = max(manual_g.abs().max().item(), torch_g.abs().max().item())
    for row, label, g, limit in zip(axes, ("manual", "torch", "manual - torch"),
                                    (manual_g, torch_g, manual_g - torch_g),
                                    (both, both, (manual_g - torch_g).abs().max().item()),
                                    strict=True):
        images(figure, row, g, limit, titles=label == "manual")
        row[0].set_ylabel(label if g.abs().max() > 0 else f"{label}\n(all 0)")
    if manual_g.dim() == 4:
        what = f"kernels 0-{units - 1}, {'x'.join(map(str, manual_g.shape[2:]))} each,"
    else:
        what = "each class's" if len(manual_g) == NUM_CLASSES else f"hidden units 0-{units - 1}:"
        what += " 784 entries"
    figure.suptitle(f"First-layer weight gradient dLoss/dW at step {worst['step']}, where "
                    f"manual's and torch's differed most (max rel diff {worst['relative']:.1e})"
                    f"; {what} as an image\nred: positive, blue: negative; the "
                    "bottom row, their difference, on its own scale")
    return figure


def shown_units(w: torch.Tensor) -> int:
    """How many rows of a first-layer weight (or its gradient) to draw: every class of
    softmax regression, the first 16 hidden units of an MLP, or kernels of a CNN."""
    return len(w) if len(w) == NUM_CLASSES else min(16, len(w))


def images(figure: plt.Figure, row, w: torch.Tensor, limit: float, titles: bool = True) -> None:
    """Each row of w (units, 784) as a 28x28 image on the axes of row, or each kernel of w
    (units, 1, k, k) as a k x k one, colours from -limit to limit, with one colour bar for
    the row."""
    limit = limit or 1.0
    for unit, ax in enumerate(row):
        picture = w[unit].reshape(28, 28) if w.dim() == 2 else w[unit, 0]
        image = ax.imshow(picture.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set(xticks=[], yticks=[], title=str(unit) if titles else "")
    figure.colorbar(image, ax=list(row), fraction=0.015, pad=0.01)


def templates(learner) -> plt.Figure:
    """What one learner learned: the first layer's weights, one 28x28 image per row of W.

    Softmax regression: each class's 784 weights, a template of the digit. MLP: the first 16
    hidden units'. In the lock step both learners hold the same weights (the manual one takes
    torch's after every step): weights() draws what can differ, the gradients.
    """
    w = learner.parameters()[0].detach().cpu().double()
    units = shown_units(w)
    figure, axes = plt.subplots(1, units, figsize=(15, 2), squeeze=False)
    images(figure, axes[0], w[:units], w[:units].abs().max().item())
    figure.suptitle(f"First-layer kernels 0-{units - 1}, as the convolution slides them over "
                    "the image (red: a pixel there excites the output, blue: inhibits)"
                    if w.dim() == 4 else "Learned weights per class (red: the pixel votes for "
                    "the class, blue: against)" if len(w) == NUM_CLASSES else f"First-layer "
                    f"weights of hidden units 0-{units - 1}, each unit's 784 weights as an "
                    "image (red: the pixel excites it, blue: inhibits)", y=1.08)
    return figure


def features(learners: list, data: Splits, index: int = 0, most: int = 16) -> plt.Figure:
    """One test digit through the CNN: the image and the first layer's kernels, then the output
    of each convolution (the first `most` channels), torch's; each row's title gives the
    largest difference from manual's.

    A feature map is one output channel: the kernel's response at every position of the
    image, bright where the pattern it holds is found."""
    x = data.test_x[index:index + 1]
    outputs = []
    for learner in learners:
        learner.logits(x)  # eval mode; keeps the hidden outputs
        outputs.append([(name, output.detach().cpu().double()) for name, output in
                        learner.named_hidden_outputs() if name.startswith("hidden.conv2d")])
    kernels = learners[1].parameters()[0].detach().cpu().double()[:most, 0]
    figure, axes = plt.subplots(1 + len(outputs[1]), 1 + most, squeeze=False,
                                figsize=(15, 1.3 * (1 + len(outputs[1]))),
                                gridspec_kw={"hspace": 0.45})
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
    image = learners[1].as_input(x)[0, 0]  # (H, W)
    axes[0, 0].imshow(image.cpu().float().numpy(), cmap="gray_r")
    axes[0, 0].set_xlabel(f"test image {index}, label {int(data.test_y[index])}", fontsize=8)
    limit = kernels.abs().max().item() or 1.0
    for kernel, ax in zip(kernels, axes[0, 1:], strict=False):
        ax.imshow(kernel.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[0, 1].set_title(f"the first layer's {len(kernels)} kernels, "
                         f"{'x'.join(map(str, kernels.shape[1:]))} (red +, blue -)",
                         fontsize=9, loc="left")
    for row, (name, maps), (_, manual_maps) in zip(axes[1:], outputs[1], outputs[0],
                                                   strict=True):
        row[0].axis("off")
        for channel, ax in enumerate(row[1:]):
            if channel < maps.shape[1]:
                ax.imshow(maps[0, channel].numpy(), cmap="viridis")
            else:
                ax.axis("off")
        difference = (maps - manual_maps).abs().max().item()
        shown = min(most, maps.shape[1])
        row[1].set_title(f"{name}: channels 0-{shown - 1} of {maps.shape[1]}, "
                         f"{maps.shape[2]}x{maps.shape[3]} each; max |manual - torch| = "
                         f"{difference:.1e}", fontsize=9, loc="left")
    figure.suptitle("One test digit after each convolution, torch's output (manual's is drawn "
                    "alike): one map per output channel, bright where its kernel responds")
    return figure


def outputs(learners: list, x: torch.Tensor) -> tuple[list, list]:
    """Each learner's predicted classes (N,), its largest logit, and its probabilities (N, C),
    its own package's functional.softmax of its own logits; both on the CPU."""
    with torch.no_grad():
        logits = [learner.logits(x) for learner in learners]
        return ([z.argmax(dim=-1).cpu() for z in logits],
                [learner.package.functional.softmax(z).cpu()
                 for learner, z in zip(learners, logits, strict=True)])


def digit(ax, data: Splits, index: int, title: str, red: bool = False,
          fontsize: float = 9) -> None:
    """Test image `index` as a 28x28 picture on ax, titled; red title and frame if red."""
    ax.imshow(data.test_x[index].cpu().float().reshape(28, 28).numpy(), cmap="gray_r")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=fontsize, color="red" if red else "black")
    if red:
        for spine in ax.spines.values():
            spine.set(color="red", linewidth=2)


def predictions(learners: list, data: Splits, count: int = 24) -> plt.Figure:
    """Test images with both predictions and probabilities; those manual misclassifies in red.

    Not a sample: the first test images manual classifies right, with the first it
    misclassifies (up to count // 3) mixed in to show what mistakes look like; the title says
    so, with the real share of misclassified test images.
    """
    predicted, probabilities = outputs(learners, data.test_x)
    labels = data.test_y.cpu()
    all_wrong = (predicted[0] != labels).nonzero().flatten().tolist()
    all_right = (predicted[0] == labels).nonzero().flatten().tolist()
    wrong = all_wrong[:max(count // 3, count - len(all_right))]
    shown = sorted(all_right[:count - len(wrong)] + wrong)
    figure, axes = plt.subplots(4, count // 4, figsize=(15, 12))
    figure.subplots_adjust(hspace=0.55)
    for ax, index in zip(axes.flat, shown + [None] * (count - len(shown)), strict=True):
        if index is None:  # fewer test images than panels
            ax.axis("off")
            continue
        text = [f"{name}: {p.argmax()} ({p.max():.0%})"
                for name, p in zip(NAMES, (p[index] for p in probabilities), strict=True)]
        digit(ax, data, index, "\n".join([f"label {labels[index]}", *text]),
              red=bool(predicted[0][index] != labels[index]))
    figure.suptitle("Test images with both learners' predictions and probabilities (red: "
                    "manual misclassifies it)\n" + chosen_sentence(len(wrong), len(shown),
                                                                   len(all_wrong), len(labels)))
    return figure


def chosen_sentence(wrong: int, shown: int, all_wrong: int, total: int) -> str:
    """How predictions() chose its images, and manual's real error on the test set."""
    accuracy = f"{all_wrong:,} of the {total:,} test images ({1 - all_wrong / total:.2%} correct)"
    if not wrong:
        return (f"The first {shown} test images: manual misclassifies none of them, and "
                f"{accuracy.replace(' (', ' in all (')}")
    return (f"Chosen to show mistakes, not at random: the first test images manual gets right, "
            f"with the first {wrong} it gets wrong mixed in on purpose.\nSo the share of red "
            f"is not the error rate: manual misclassifies {accuracy}")


def confusion(learners: list, data: Splits, history: History, most: int = 24) -> plt.Figure:
    """Torch's confusion matrix (true label x predicted) on the test set, and `most` test images
    where the two learners differ most: first those they classify differently, then those
    whose probabilities differ most, |dp| = max over the classes of |p_manual - p_torch|."""
    labels = data.test_y.cpu()
    predicted, probabilities = outputs(learners, data.test_x)
    figure = plt.figure(figsize=(15, 7.5))
    grid = figure.add_gridspec(1, 2, width_ratios=[1, 1.5], wspace=0.1, top=0.8)  # title
    matrix_of(figure.add_subplot(grid[0]), labels, predicted[1])
    gap = (probabilities[0].double() - probabilities[1].double()).abs().amax(dim=-1)
    differ = predicted[0] != predicted[1]
    shown = most_different(gap, differ)[:most].tolist()
    cells = grid[1].subgridspec(4, most // 4, hspace=0.75, wspace=0.3)
    for cell, index in zip(cells, shown + [None] * (most - len(shown)), strict=True):
        ax = figure.add_subplot(cell)
        if index is None:  # fewer test images than panels
            ax.axis("off")
            continue
        digit(ax, data, index, f"image {index}, label {labels[index]}\nmanual {predicted[0][index]}"
              f", torch {predicted[1][index]}\n|dp| {gap[index]:.1e}", red=bool(differ[index]),
              fontsize=8)
    figure.suptitle(differ_sentence(len(labels), int(differ.sum()), len(shown),
                                    gap.max().item() if len(gap) else 0.0)
                    + ("\n(after a mismatch the manual learner was re-synchronized to torch "
                       "every step: what it shows is not its own training's result)"
                       if history.resynchronized else ""), fontsize=11)
    return figure


def matrix_of(ax, labels: torch.Tensor, predicted: torch.Tensor) -> None:
    """The confusion matrix (true label x predicted class) on ax, with each count written in."""
    matrix = torch.bincount(labels * NUM_CLASSES + predicted, minlength=NUM_CLASSES ** 2)
    matrix = matrix.reshape(NUM_CLASSES, NUM_CLASSES)
    ax.imshow(matrix.clamp_min(1).log().numpy(), cmap="Blues")
    for true in range(NUM_CLASSES):
        for guess in range(NUM_CLASSES):
            ax.text(guess, true, str(matrix[true, guess].item()), ha="center", va="center",
                    fontsize=8, color="white" if true == guess else "black")
    ax.set(title=f"torch: {matrix.trace() / matrix.sum():.2%} correct (log color scale)",
           xlabel="predicted", ylabel="true label", xticks=range(NUM_CLASSES),
           yticks=range(NUM_CLASSES))


def most_different(gap: torch.Tensor, differ: torch.Tensor) -> torch.Tensor:
    """The test images' indices, those the two learners classify differently first, each
    group by gap (N,) from the largest down; equal gaps keep the test set's order."""
    order = torch.argsort(gap, descending=True, stable=True)
    return torch.cat([order[differ[order]], order[~differ[order]]])


def differ_sentence(total: int, differ: int, shown: int, largest: float) -> str:
    """confusion()'s title: the matrix, and which test images its right half shows."""
    which = (f"They classify all {total:,} alike (0 differently), so these are the {shown}"
             if not differ else f"They classify {differ:,} of the {total:,} differently: "
             f"the {shown} of those (red)" if differ >= shown else f"They classify {differ} of "
             f"the {total:,} differently (red, first), then the {shown - differ}")
    return (f"Left: torch's confusion matrix on the {total:,} test images. Right: the test "
            f"images where manual and torch differ most.\n{which} whose probabilities differ "
            "most,\n|dp| = max over the classes of |p_manual - p_torch|, each from its own "
            "package's softmax" + (": 0 on every test image, the probabilities are "
                                    "bit-identical" if not largest else ""))
