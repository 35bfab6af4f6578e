"""The side-by-side documents stay true to the code: docs/side_by_side.html and the table of
docs/side_by_side.md.

1. The page is rebuilt in memory from the live source and must equal the committed
   file byte for byte; it is self-contained and pairs every manual definition.
2. docs/side_by_side.md links the page, and every function or class its table names is
   defined in the file the row links. (Every link of every page: tests/test_pages.py.)
"""

import ast
import html
import importlib.util
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGE = REPO_ROOT / "docs" / "side_by_side.html"
BUILDER = REPO_ROOT / "docs" / "build_side_by_side.py"
TABLE_PAGE = REPO_ROOT / "docs" / "side_by_side.md"


def load_builder():
    """docs/build_side_by_side.py as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_side_by_side", BUILDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def builder():
    return load_builder()


@pytest.fixture(scope="module")
def page(builder) -> str:
    return builder.build_page(REPO_ROOT)


# 1. The side-by-side page ----------------------------------------------------------------------

def test_side_by_side_page_is_up_to_date(page: str):
    """The committed page is exactly what the builder makes from the current source."""
    assert PAGE.is_file(), "docs/side_by_side.html is missing: run `make docs` and commit it"
    committed = PAGE.read_bytes()
    if committed != page.encode("utf-8"):
        old, new = committed.decode("utf-8", "replace").splitlines(), page.splitlines()
        line = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b),
                    min(len(old), len(new)))
        pytest.fail(
            "docs/side_by_side.html differs from the page built from the current source "
            f"(first at line {line + 1}: committed {old[line:line + 1]}, "
            f"built {new[line:line + 1]}): run `make docs` "
            "(or `python docs/build_side_by_side.py`) and commit the result", pytrace=False)


def test_side_by_side_page_builds_the_same_twice(builder, page: str):
    """No timestamps, no set or dict order leaks: two builds give the same bytes."""
    assert builder.build_page(REPO_ROOT) == page


def test_side_by_side_page_is_self_contained(page: str):
    """No scripts, no external style sheets, images or fonts; links stay inside the repository."""
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert "@import" not in page and "url(" not in page
    for target in re.findall(r'href="([^"]*)"', page):
        assert not re.match(r"[a-z]+:", target), f"external link {target}"
        if not target.startswith("#"):
            assert (PAGE.parent / target).resolve().is_file(), f"broken link {target}"
    anchors = set(re.findall(r'id="([^"]*)"', page))
    for target in re.findall(r'href="#([^"]*)"', page):
        assert target in anchors, f"link to a missing anchor #{target}"


def definitions(path: Path) -> list[str]:
    """Qualified names of the functions, classes and methods defined in a file."""
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.append(node.name)
        if isinstance(node, ast.ClassDef):
            names += [f"{node.name}.{child.name}" for child in node.body
                      if isinstance(child, ast.FunctionDef) and child.name != "__init__"]
    return names


def test_side_by_side_page_shows_every_manual_definition(builder, page: str):
    """Each function, class and method of every mirrored manual file has its section."""
    for stem in builder.stems(REPO_ROOT):
        for qualname in definitions(REPO_ROOT / "manual" / f"{stem}.py"):
            assert f'id="{stem}.{qualname}"' in page, f"manual/{stem}.py {qualname} not on the page"


def test_side_by_side_pairs_follow_the_mirrored_names(builder):
    """Same names pair their code; the gradient faces loss.backward(); backward faces the
    autograd comment; SGD faces torch's SGD."""
    pairs = {concept.key: concept for stem in builder.stems(REPO_ROOT)
             for concept in builder.concepts(REPO_ROOT, stem)[2]}

    def torch_lines(key: str) -> str:
        side = pairs[key].torch
        return "\n".join(side.module.lines[side.item.start - 1:side.item.end])

    assert "return F.softmax(" in torch_lines("functional.softmax")
    assert ".backward()" in torch_lines("functional.cross_entropy_grad")
    assert pairs["model.SoftmaxRegression.backward"].torch.item.kind == "comment"
    assert torch_lines("model.SoftmaxRegression.backward").lstrip().startswith("# backward:")
    assert torch_lines("optim.SGD") == "from torch.optim import SGD, Adam, AdamW, Optimizer"
    assert torch_lines("optim.Adam") == torch_lines("optim.SGD")
    for method in ("step", "decay", "bias_corrections", "denominator"):
        assert pairs[f"optim.Adam.{method}"].torch.note, method
    assert pairs["optim.SGD.step"].torch.note and pairs["optim.SGD.step"].torch.item is None
    assert "loss.backward()" in torch_lines("train.forward_backward")


def test_side_by_side_layers_come_before_the_models_built_from_them(builder, page: str):
    """layers.py has its section, between functional.py and model.py, with its pairs: the
    layers of the MLP and of the CNN come before the Chain that runs them and the models
    that build them."""
    stems = builder.stems(REPO_ROOT)
    assert stems.index("functional") < stems.index("layers") < stems.index("model")
    assert page.index('id="layers"') < page.index('id="model"')

    def position(key: str) -> int:
        assert f'id="{key}"' in page, f"no section {key}"
        return page.index(f'id="{key}"')

    for key in ("model.SoftmaxRegression.forward", "model.SoftmaxRegression.backward",
                "model.Chain.forward", "model.Chain.backward", "model.CNN.backward"):
        position(key)
    layers = {"MLP": ("Linear", "BatchNorm1d", "ReLU"),
              "CNN": ("Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear")}
    for model, names in layers.items():
        assert position("model.Chain") < position(f"model.{model}"), model
        for name in names:
            for method in ("", ".forward", ".backward"):
                assert position(f"layers.{name}{method}") < position("model.Chain"), name
    position("layers.BatchNorm1d.named_buffers")


def test_side_by_side_torch_layers_are_described_truly(builder):
    """The layers are torch's own: their backward is autograd's (nn.Module has no backward
    method), their parameters(), train(), ... are inherited from nn.Module."""
    pairs = {concept.key: concept for concept in builder.concepts(REPO_ROOT, "layers")[2]}
    assert pairs["layers.Linear"].torch.item.kind == "import"
    inherited = ("named_parameters", "parameters", "named_buffers", "train", "eval")
    own = {key for key, concept in pairs.items()  # written in torch_impl: SyncBatchNorm (CPU)
           if "." not in concept.qualname and concept.torch.item is not None
           and concept.torch.item.kind != "import"}
    assert own == {"layers.SyncBatchNorm"}
    methods = [concept for concept in pairs.values()
               if "." in concept.qualname and concept.key.rpartition(".")[0] not in own]
    assert methods
    for concept in methods:
        side, name = concept.torch, concept.qualname.rpartition(".")[2]
        assert side.item is None and side.note, concept.key
        assert "torch's own method, not in this repository" not in side.note, (
            f"{concept.key}: the automatic note; NOTES should say what torch runs")
        if name == "backward":
            assert "has no backward method" in side.note and "autograd" in side.note
        if name in inherited:
            assert "nn.Module" in side.note and "inherited" in side.note, concept.key
    assert "AddmmBackward0" in pairs["layers.Linear.backward"].torch.note
    assert "threshold_backward" in pairs["layers.ReLU.backward"].torch.note
    assert "native_batch_norm_backward" in pairs["layers.BatchNorm1d.backward"].torch.note
    assert "F.conv2d" in pairs["layers.Conv2d.forward"].torch.note
    assert "ConvolutionBackward0" in pairs["layers.Conv2d.backward"].torch.note
    assert "isnan" in pairs["layers.MaxPool2d.forward"].torch.note
    assert "MaxPool2DWithIndicesBackward0" in pairs["layers.MaxPool2d.backward"].torch.note
    assert "ViewBackward0" in pairs["layers.Flatten.backward"].torch.note


def test_side_by_side_notes_name_sections_of_the_page(builder, page: str):
    """Every hand-written note is shown: a NOTES key that names no section is stale."""
    for key in builder.NOTES:
        assert f'id="{key}"' in page, f"NOTES[{key!r}] names no section of the page"


def test_side_by_side_models_face_the_comments_and_the_inherited_layer(builder):
    """Chain's methods face the comments of the torch class, one comment naming several;
    SoftmaxRegression, which inherits forward and backward from manual Linear, shows them,
    and the CNN, which inherits backward from Chain, shows Chain's."""
    concepts = builder.concepts(REPO_ROOT, "model")[2]
    pairs = {concept.key: concept for concept in concepts}

    def lines(side) -> str:
        return "\n".join(side.module.lines[side.item.start - 1:side.item.end])

    backward = pairs["model.Chain.backward"].torch
    assert backward.item.kind == "comment" and backward.item.start == backward.item.end
    assert lines(backward).lstrip().startswith("# backward: written by autograd")
    assert "return self.layers[-1](x)" in lines(pairs["model.Chain.forward"].torch)
    for method in ("named_parameters", "named_buffers", "train", "eval"):
        side = pairs[f"model.Chain.{method}"].torch
        assert side.item is not None and side.item.kind == "comment", method
        assert lines(side).lstrip().startswith("# named_parameters(), named_buffers(),")
    for method in ("train", "eval"):
        assert lines(pairs[f"model.SoftmaxRegression.{method}"].torch).lstrip().startswith(
            "# train() / eval():")
    keys = [concept.key for concept in concepts]
    assert keys[:6] == [f"model.SoftmaxRegression{name}" for name in
                        ("", ".forward", ".backward", ".parameters", ".train", ".eval")]
    for method in ("forward", "backward"):
        concept = pairs[f"model.SoftmaxRegression.{method}"]
        assert concept.manual.module.path == "manual/layers.py", method
        assert lines(concept.manual).lstrip().startswith(f"def {method}(")
        assert "Inherited from Linear" in concept.manual.note
    assert "return self.linear(x)" in lines(pairs["model.SoftmaxRegression.forward"].torch)
    assert lines(pairs["model.SoftmaxRegression.backward"].torch).lstrip().startswith(
        "# backward:")
    cnn = pairs["model.CNN.backward"]
    assert cnn.manual.module.path == "manual/model.py"
    assert lines(cnn.manual).lstrip().startswith("def backward(")
    assert "Inherited from Chain" in cnn.manual.note
    assert lines(cnn.torch).lstrip().startswith("# backward: written by autograd")


def formula_of(page: str, key: str) -> str:
    """The formula block of one section of the page, unescaped."""
    article = page.split(f'<article class="concept" id="{key}">', 1)[1].split("</article>")[0]
    match = re.search(r'<div class="formula">(.*?)</div>', article, re.S)
    assert match, f"{key} has no formula"
    return html.unescape(match.group(1))


def test_side_by_side_formulas_keep_their_displayed_blocks(page: str):
    """The displayed block of a docstring reaches the page indented, inside its sentence."""
    backward = formula_of(page, "layers.BatchNorm1d.backward")
    assert "\nweight.grad = sum_n g_n x_hat_n" in backward
    assert "\nreturns dLoss/dx, g's shape:\n" in backward
    assert ("\n    training: gamma / s * (g - mean_m g_m - x_hat mean_m g_m x_hat_m)"
            in backward)
    assert "\n    eval:     gamma / s * g" in backward
    linear = formula_of(page, "layers.Linear.backward")
    assert "\n    weight.grad = dLoss/dW = g^T x" in linear
    assert "\nand returns dLoss/dx = g W" in linear  # the sentence goes on after the block
    assert "such as the images." in linear
    batchnorm = formula_of(page, "layers.BatchNorm1d")
    assert "\nEach call also updates the estimates\n" in batchnorm  # from the sentence's start
    assert "is the biased one" not in batchnorm
    assert "\n    running_var  <- (1 - momentum) running_var" in batchnorm


def test_formula_takes_the_sentence_around_the_block(builder):
    """From the start of the introducing sentence to the end of the one the block is in."""
    docstring = ("Summary line.\n\nFirst sentence. The update\nrule is:\n    p <- p - lr g\n"
                 "for every p, in place. Not shown.\n\nLater text.")
    assert builder.formula(docstring) == (
        "Summary line.\n\nThe update\nrule is:\n    p <- p - lr g\nfor every p, in place.")
    assert builder.formula("Only a summary.") == "Only a summary."


# 2. The table of docs/side_by_side.md --------------------------------------------------------

def table_rows() -> list[list[str]]:
    """The cells of each row of the page's table, header and rule left out."""
    rows = [line.strip().strip("|").split("|") for line in TABLE_PAGE.read_text().splitlines()
            if line.startswith("|")]
    assert len(rows) > 2, "the side-by-side table has no rows"
    assert [cell.strip() for cell in rows[0]] == ["concept", "formula", "by hand", "with torch"]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def linked_file(link: str) -> str:
    """A link of the table page as a path from the repository root ("manual/layers.py")."""
    return (TABLE_PAGE.parent / link).resolve().relative_to(REPO_ROOT).as_posix()


def defined_names(path: Path) -> set[str]:
    """Everything a file defines or imports at the top, and the methods of its classes."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{child.name}" for child in node.body
                      if isinstance(child, ast.FunctionDef)}
        if isinstance(node, ast.ImportFrom):
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def test_table_page_links_the_side_by_side_page():
    links = re.findall(r"\]\(([^)]+)\)", TABLE_PAGE.read_text())
    assert "docs/side_by_side.html" in map(linked_file, links)


def test_table_names_exist_in_the_linked_files():
    """Each implementation cell links one file and names what it defines there, in `code`."""
    for row in table_rows():
        assert len(row) == 4, f"a row needs 4 cells: {row}"
        for cell, folder in zip(row[2:], ("manual/", "torch_impl/"), strict=True):
            links = [linked_file(link) for link in re.findall(r"\]\(([^)]+)\)", cell)]
            assert len(links) == 1 and links[0].startswith(folder), (
                f"'{cell}' must link one file in {folder}")
            path = REPO_ROOT / links[0]
            assert path.is_file(), f"{links[0]} does not exist"
            names = [name for name in re.findall(r"`([^`]+)`", cell)
                     if re.fullmatch(r"[A-Za-z_][\w.]*", name)]
            assert names, f"'{cell}' names no function or class"
            for name in names:
                assert name in defined_names(path), f"{links[0]} defines no {name}"


def test_table_covers_every_mirrored_file(builder):
    """Each pair of mirrored files has at least one row of the table."""
    linked = {linked_file(re.findall(r"\]\(([^)]+)\)", row[2])[0]) for row in table_rows()}
    for stem in builder.stems(REPO_ROOT):
        assert f"manual/{stem}.py" in linked, f"the side-by-side table has no row for {stem}.py"
