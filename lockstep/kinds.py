"""The kinds of mismatch, told from manual's tensor a and torch's b alone.

Tried in this order (rounding, which needs a float64 twin of the step, is lockstep.reference's):
    shape       the shapes differ (or a is missing); is a.T, a permutation of a's dimensions
                (in and out channels swapped), or a reshape of a, equal to b?
    non-finite  NaN or inf on one side only
    rounding    (lockstep.reference)
    permuted    the same entries in another order: a kernel rotated by 180 degrees (a true
                convolution), in and out channels swapped, a flatten in another order
    scale       a = k b for one constant k (k = N, the batch size; 1/N; -1, the sign)
    shifted     dLoss/dlogits differs in every row at the target's column y and at one other,
                y + k: the target distribution's 1 sits in the wrong column
    partial     only some rows, columns or entries differ (for the input of max pooling:
                only its tied maxima)
    other
A diagnosis is {"step", "tensor", "kind", "factor", "message"}; factor is k for scale.
"""

import itertools

import torch

from lockstep.checks import agreement, shape_of

KINDS = ("shape", "scale", "non-finite", "permuted", "shifted", "partial", "rounding", "fork",
         "block", "statistics", "other")  # the last three ask lockstep.blocks
SCALE_FIT = 1e-3  # a = k b: every entry within this fraction of the largest
WRONG_ORDER = "the product is taken in the wrong order (x^T g where g^T x belongs?)."
SWAPPED = "the in and out channels are swapped (nn.Conv2d's weight is (out, in, k, k))."


def make(step: int, tensor: str, kind: str, sentence: str, factor: float | None = None) -> dict:
    """A diagnosis: the step, the tensor, the kind, the factor (scale only), and the
    message a learner reads."""
    return {"step": step, "tensor": tensor, "kind": kind, "factor": factor,
            "message": f"step {step}, {told(tensor, kind, sentence, 'differs first')}"}


def told(tensor: str, kind: str, sentence: str, differs: str = "differs") -> str:
    """The tutor's words for one tensor, as compare.py's diagnosis and the grader give them:
    "bias.grad differs (scale): manual's is 1/100 of torch's, ..."."""
    return f"{label(tensor)} {differs} ({kind}): {sentence}"


def explain(tensor: str, a: torch.Tensor | None, b: torch.Tensor | None, limit: float,
            batch_size: int = 0, targets: torch.Tensor | None = None,
            ties: torch.Tensor | None = None) -> str:
    """told() for manual's a against torch's b, which differ by more than `limit`: the
    grader's (python -m pytest --manual) sentence for a check that failed. ties: see
    classify."""
    kind, _, sentence = classify(a, b, limit, batch_size, axes_of(tensor), targets=targets,
                                 ties=ties)
    return told(tensor, kind, sentence)


def axes_of(name: str) -> tuple[str, str]:
    """What the rows and columns of a compared gradient are, for partial_sentence."""
    if name.startswith("logits"):
        return "example (row)", "class (column)"
    if name.startswith("hidden."):
        return "example (row)", "unit (column)"
    return "row", "column"


def tensor_key(group: str, name: str) -> str:
    """The diagnosis's name of a compared tensor: gradients get ".grad"."""
    return f"{name}.grad" if group == "grad" else name


def label(tensor: str) -> str:
    """How a learner calls a compared tensor: "logits.grad" -> "dLoss/dlogits (logits.grad)"."""
    if tensor == "logits.grad":
        return "dLoss/dlogits (logits.grad)"
    if tensor.startswith("hidden.") and tensor.endswith(".grad"):
        return (f"dLoss/d({tensor.removesuffix('.grad')}), the hidden layer's output gradient "
                "(what the backward of the layer above it returns)")
    if tensor.startswith("hidden."):
        return f"{tensor}, the hidden layer's output in the forward pass,"
    return tensor


@torch.no_grad()
def classify(a: torch.Tensor | None, b: torch.Tensor | None, limit: float, batch_size: int,
             axes: tuple[str, str] = ("row", "column"), rounding=None,
             targets: torch.Tensor | None = None, ties: torch.Tensor | None = None,
             layout: tuple[int, int, int] | None = None) -> tuple[str, float | None, str]:
    """(kind, factor, sentence) for manual's a against torch's b, which differ by more than
    `limit` (max|a - b| / max|b|). rounding: None, or a function of no arguments that returns
    the rounding sentence when the difference is float32 rounding, else None. targets: (N,),
    the classes, where a and b are dLoss/dlogits (N, C): for the shifted one-hot. ties: where
    a and b are the gradient of a max pooling's input, the mask of its tied maxima
    (lockstep.ties.tied_maxima). layout: (C, H, W), where a and b are the output of a Flatten
    of (N, C, H, W)."""
    if a is None or b is None or a.shape != b.shape:
        return "shape", None, shape_sentence(a, b, limit)
    a, b = a.double(), b.double()
    one_side = a.isfinite() != b.isfinite()
    if one_side.any():
        return "non-finite", None, non_finite_sentence(a, b, one_side)
    if not a.isfinite().all() and agrees(a.nan_to_num(0.0, 0.0, 0.0),
                                         b.nan_to_num(0.0, 0.0, 0.0), limit):
        return "non-finite", None, "both sides are NaN or infinite at the same entries."
    sentence = rounding() if rounding else None
    if sentence:
        return "rounding", None, sentence
    a, b = a.nan_to_num(0.0, 0.0, 0.0), b.nan_to_num(0.0, 0.0, 0.0)  # both non-finite: alike
    if a.dim() == 2 and a.shape[0] == a.shape[1] and agrees(a.T, b, limit):
        return "shape", None, ("manual's transposed (a.T) equals torch's; the shapes agree only "
                               "because the matrix is square: the product is taken in the "
                               "wrong order.")
    sentence = permuted_sentence(a, b, limit, layout)
    if sentence:
        return "permuted", None, sentence
    factor = constant_factor(a, b, limit)
    if factor is not None:
        return "scale", *scale_sentence(factor, batch_size)
    differ = (a - b).abs() > limit * b.abs().amax()
    if ties is not None and differ.any() and not (differ & ~ties).any():
        return "partial", None, ties_sentence(a, b, differ)
    shift = None if targets is None else shifted_by(a, b, differ, targets)
    if shift:
        return "shifted", None, shifted_sentence(shift, a.shape[-1])
    active = (a != 0) | (b != 0)  # entries that are 0 on both sides prove nothing
    sentence = partial_sentence(differ, active, axes)
    if sentence:
        return "partial", None, sentence
    return "other", None, ("no simple pattern: not a transpose, not a constant factor, not a "
                           f"few entries; max|manual - torch| / max|torch| = {distance(a, b):.1e}.")


def permuted_sentence(a: torch.Tensor, b: torch.Tensor, limit: float,
                      layout: tuple[int, int, int] | None) -> str | None:
    """What reorders b's entries into a's, of a few the tutor knows, or None: each kernel
    rotated by 180 degrees, the first two dimensions (out and in channels) swapped, a
    flattened (C, H, W) in another order."""
    if a.dim() == 4 and a.shape[-2:].numel() > 1 and agrees(a.flip(-2, -1), b, limit):
        return ("manual's equals torch's rotated by 180 degrees (a.flip(-2, -1)), each kernel: "
                "a true convolution, which flips the kernel, where nn.Conv2d takes a "
                "cross-correlation, which does not.")
    if a.dim() == 4 and a.shape[0] == a.shape[1] and agrees(a.transpose(0, 1), b, limit):
        return (f"manual's with its first two dimensions swapped (a.transpose(0, 1)) equals "
                f"torch's; the shapes agree only because both are {a.shape[0]}: {SWAPPED}")
    if layout is None or a.dim() != 2 or a.shape[1] != torch.Size(layout).numel():
        return None
    images = b.reshape(len(b), *layout)
    for order in itertools.permutations((1, 2, 3)):
        if order != (1, 2, 3) and agrees(images.permute(0, *order).flatten(1), a, limit):
            named = ", ".join("CHW"[dim - 1] for dim in order)
            return (f"manual's holds torch's entries flattened in ({named}) order, torch's in "
                    "(C, H, W): channel by channel, each channel row by row, as "
                    "x.flatten(start_dim=1) of (N, C, H, W) gives them.")
    return None


def ties_sentence(a: torch.Tensor, b: torch.Tensor, differ: torch.Tensor) -> str:
    """The entries that differ are all tied maxima of max pooling windows."""
    extra = int((differ & (b == 0) & (a != 0)).sum())
    where = (f"; at {extra:,} of them manual's is nonzero where torch's is 0: did you send the "
             "gradient to every tied maximum?" if extra else ".")
    return (f"only entries at tied maxima of max pooling differ: {int(differ.sum()):,}, each one "
            "of several equal largest values of its window. Torch sends a window's gradient "
            f"to its first maximum in row-major order only (val > maxval){where}")


def shifted_by(a: torch.Tensor, b: torch.Tensor, differ: torch.Tensor,
               targets: torch.Tensor) -> int | None:
    """k when manual's a and torch's b, dLoss/dlogits (N, C) with C >= 3, differ as a one-hot
    at column (y + k) mod C in place of y would make them: a - b = c (onehot(y) - onehot(y +
    k)) for one constant c (1/N for a mean, times 1 - eps with label smoothing) and one k != 0
    in every row (differ: where they differ); else None. With C = 2 any difference of a row
    summing to 0 would have that shape."""
    if (a.dim() != 2 or targets.shape != a.shape[:1] or a.shape[1] < 3
            or not (differ.sum(dim=1) == 2).all()):
        return None
    rows = torch.arange(len(a), device=a.device)
    others = differ.clone()
    others[rows, targets] = False
    columns = others.int().argmax(dim=1)
    shifts = (columns - targets) % a.shape[1]
    d = a - b
    c = d[rows, targets]
    pattern = (differ[rows, targets].all() and (shifts == shifts[0]).all()
               and agrees(d[rows, columns], -c, SCALE_FIT) and agrees(c, c[:1].expand_as(c),
                                                                      SCALE_FIT))
    return int(shifts[0]) if pattern else None


def shifted_sentence(k: int, num_classes: int) -> str:
    column = f"y + {k}" if k <= num_classes // 2 else f"y - {num_classes - k}"
    return (f"in every row the difference sits at the target's column y and at column "
            f"{column}: the one-hot is shifted (the target distribution's 1 at column "
            f"{column}, not y?).")


def constant_factor(a: torch.Tensor, b: torch.Tensor, limit: float) -> float | None:
    """k when a = k b entry by entry (least squares, every entry within SCALE_FIT of the
    largest) and k is not 1 within `limit`; else None."""
    size = (b * b).sum()
    if size == 0:
        return None
    k = ((a * b).sum() / size).item()
    residual = (a - k * b).abs().amax()  # what k b leaves: small against a, and against k - 1
    fits = residual <= SCALE_FIT * a.abs().amax() and residual <= 0.1 * abs(k - 1) * b.abs().amax()
    return k if fits and abs(k - 1) > limit else None


def scale_sentence(k: float, batch_size: int) -> tuple[float, str]:
    """(the factor, the sentence) for a = k b: k = N, 1/N and -1 are named, and given exactly;
    any other k to 6 significant digits."""
    if batch_size > 1 and abs(k / batch_size - 1) < SCALE_FIT:
        return float(batch_size), (
            f"manual's is {batch_size} x torch's, the batch size N = {batch_size}: did you "
            "forget to divide by the batch size?")
    if batch_size > 1 and abs(k * batch_size - 1) < SCALE_FIT:
        return 1 / batch_size, (
            f"manual's is 1/{batch_size} of torch's, 1/N for the batch size N = {batch_size}: "
            "did you divide by the batch size where torch sums (a mean instead of a sum)?")
    if abs(k + 1) < SCALE_FIT:
        return -1.0, "manual's is -1 x torch's: the sign is flipped."
    if k == 0:
        return 0.0, "manual's is all zeros where torch's is not: was it ever computed?"
    k = float(f"{k:.6g}")
    return k, f"manual's is {k:.6g} x torch's: off by a constant factor of {k:.6g}."


def shape_sentence(a: torch.Tensor | None, b: torch.Tensor | None, limit: float) -> str:
    if a is None or b is None:
        which, shape = ("manual", b) if a is None else ("torch", a)
        return f"{which}'s was never set (None); the other's is {shape_of(shape)}."
    start = f"manual's is {shape_of(a)}, torch's {shape_of(b)}"
    if a.dim() == 2 and a.T.shape == b.shape and agrees(a.T, b, limit):
        return f"{start}, and manual's transposed (a.T) equals torch's: {WRONG_ORDER}"
    for order in itertools.permutations(range(a.dim())) if 3 <= a.dim() <= 4 else []:
        permuted = a.permute(order)
        if permuted.shape == b.shape and agrees(permuted, b, limit):
            why = SWAPPED if order == (1, 0, 2, 3) else "its dimensions are in another order."
            return f"{start}, and manual's permuted (a.permute{order}) equals torch's: {why}"
    if a.numel() == b.numel() and agrees(a.reshape(b.shape), b, limit):
        return (f"{start}, and manual's reshaped to {shape_of(b)} equals torch's: a stray "
                "dimension (keepdim=True?).")
    return f"{start}; neither manual's transposed nor a reshape of it equals torch's."


def shapes_sentence(manual_shape: tuple, torch_shape: tuple) -> str:
    """shape_sentence from the two shapes alone, for a .grad that torch refused to take
    (RuntimeError: attempting to assign a gradient of size ...), whose values are not known."""
    start = f"manual's is {tuple(manual_shape)}, torch's {tuple(torch_shape)}"
    if len(manual_shape) == 2 and tuple(manual_shape[::-1]) == tuple(torch_shape):
        return f"{start}, the shape of its transpose: {WRONG_ORDER}"
    if len(manual_shape) == 4 and (manual_shape[1], manual_shape[0],
                                   *manual_shape[2:]) == tuple(torch_shape):
        return f"{start}, its first two dimensions swapped: {SWAPPED}"
    return f"{start}."


def agrees(a: torch.Tensor, b: torch.Tensor, limit: float) -> bool:
    """max|a - b| <= limit max|b|: the verdict's test."""
    return bool((a.double() - b.double()).abs().amax() <= limit * b.double().abs().amax())


def non_finite_sentence(a: torch.Tensor, b: torch.Tensor, one_side: torch.Tensor) -> str:
    side, values = ("manual", a) if (~a.isfinite() & one_side).any() else ("torch", b)
    entries = (one_side & ~values.isfinite()).nonzero()
    nans = int(values[one_side].isnan().sum())
    what = "NaN" if nans == len(entries) else "inf" if nans == 0 else "NaN or inf"
    if (values[one_side & ~values.isfinite()] == -torch.inf).all():
        what = "-inf"
    why = (": the log of a probability that underflowed to 0? Work in log space, (z - m) - "
           "log sum exp(z - m)" if what == "-inf" else
           ": a loss of inf is minus the log of a probability that underflowed to 0?"
           if what == "inf" and values.dim() == 0 else ".")
    if values.dim() == 0:
        return f"{side}'s is {what} where the other side's is finite{why}"
    return (f"{side}'s has {len(entries)} {what} entr{'y' if len(entries) == 1 else 'ies'} "
            f"(the first at {entries[0].tolist()}) where the other side's is finite{why}")


def partial_sentence(differ: torch.Tensor, active: torch.Tensor,
                     axes: tuple[str, str]) -> str | None:
    """Which rows or columns differ, when only some of those with a nonzero entry do; or which
    entries, when fewer than half of the nonzero ones do; else None (not partial)."""
    if differ.dim() == 2:
        for dim, axis in ((1, axes[0]), (0, axes[1])):
            lines, nonzero = differ.any(dim=dim), active.any(dim=dim)
            if (nonzero & ~lines).any():
                return (f"only some {axis}s differ: {listed(lines.nonzero().flatten())} "
                        f"({int(lines.sum())} of the {int(nonzero.sum())} with a nonzero "
                        "entry).")
    if int(differ.sum()) * 2 < int(active.sum()):
        return (f"only some entries differ: {int(differ.sum())} of the {int(active.sum())} "
                f"nonzero ones, at {listed(differ.nonzero())}.")
    return None


def listed(indices: torch.Tensor, most: int = 5) -> str:
    shown = [str(index.tolist()) for index in indices[:most]]
    return ", ".join(shown) + (", ..." if len(indices) > most else "")


def distance(side: torch.Tensor, reference: torch.Tensor) -> float:
    """max|side - reference| / max|reference| (0 when both are all zeros), in reference's
    dtype: checks.agreement's relative difference."""
    return agreement("", side.to(reference.dtype), reference).max_rel_diff
