"""The teaching notebooks: each one runs top to bottom on a fresh kernel with the bundled model,
draws at least one figure, shows the shape diagram, ends with a "Try this" experiment, and is
committed without outputs (scripts/strip_notebooks.py).

A failure names the notebook and the cell, and shows the cell's code and the error."""
import json
import os
import re
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
BUNDLED = ROOT / "minineo" / "data" / "neo-shakespeare"
HELDOUT = ROOT / "minineo" / "data" / "neo-shakespeare-heldout.txt"
CELL_TIMEOUT = 300   # seconds per cell; each notebook as a whole takes well under two minutes
ANSI = re.compile(r"\x1b\[[0-9;]*m")   # the colours of IPython tracebacks
FIGURE_CHECK = "import matplotlib.pyplot as plt\nassert plt.get_fignums(), 'this notebook drew no figure'"
SHAPES_LINK = "![shapes](figures/shapes.png)"   # the forward pass with every shape, drawn by figures/make_shapes.py


def code_cells(path):
    return [(i, cell) for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"])
            if cell["cell_type"] == "code"]


def test_the_series_exists():
    assert [p.name[:3] for p in NOTEBOOKS] == [f"{i:02d}_" for i in range(1, len(NOTEBOOKS) + 1)], \
        f"notebooks should be numbered 01_, 02_, ... without gaps: {[p.name for p in NOTEBOOKS]}"
    assert len(NOTEBOOKS) >= 6


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    dirty = [i for i, cell in code_cells(path) if cell.get("outputs") or cell.get("execution_count") is not None]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; run `python scripts/strip_notebooks.py`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_opens_with_prose_and_one_model_switch(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# "), \
        f"{path.name}: the first cell should be a markdown title saying what the notebook shows"
    code = "\n".join("".join(cell["source"]) for _, cell in code_cells(path))
    assert code.count("MODEL = None  # the bundled model") == 1 and "minineo.load(MODEL" in code, \
        f"{path.name}: the model should come from one `MODEL = None` line and minineo.load(MODEL)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_opens_with_objectives_and_a_time_estimate(path):
    first = "".join(json.loads(path.read_text(encoding="utf-8"))["cells"][0]["source"])
    assert "**Learning objectives.**" in first, f"{path.name}: the first cell should list its learning objectives"
    objectives = first.split("**Learning objectives.**", 1)[1].split("\n\n", 1)[0]
    assert len(re.findall(r"^- ", objectives, re.M)) >= 2, f"{path.name}: list at least two objectives:\n{objectives}"
    time_line = re.search(r"^\*\*Time:\*\* about \d+ minutes.*run in about \d+ s(econds)? on ", first, re.M)
    assert time_line, f"{path.name}: say how long it takes, '**Time:** about N minutes ... run in about N s on ...'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_try_this_asks_questions_the_notebook_answers(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    try_this = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"
                and "".join(c["source"]).startswith("## Try this")][-1]
    questions = re.findall(r"^\d\. ", try_this, re.M)
    assert 2 <= len(questions) <= 3, f"{path.name}: 'Try this' should ask two or three numbered questions:\n{try_this}"
    last_code = "".join(cells[-1]["source"])
    assert re.search(r'print\(f?"1\. ', last_code) and re.search(r'print\(f?"2\. ', last_code), \
        f"{path.name}: the last cell should print its answers to the questions ('1. ...', '2. ...')"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_shows_the_shapes_and_ends_with_an_experiment(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    markdown = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown"]
    assert any(SHAPES_LINK in text for text in markdown) and (NOTEBOOK_DIR / "figures" / "shapes.png").is_file(), \
        f"{path.name}: should show the forward pass's shapes with {SHAPES_LINK} (notebooks/figures/make_shapes.py draws it)"
    last_heading = [line for text in markdown for line in text.splitlines() if line.startswith("## ")][-1]
    assert last_heading.startswith("## Try this") and cells[-1]["cell_type"] == "code", \
        f"{path.name}: should end with a '## Try this' section and a cell that changes something and measures it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_on_a_fresh_kernel(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    # A notebook that imports an extra's package (05: lm-eval's windows) skips without it, naming it;
    # `pip install -e ".[test]"` does not install lm-eval (".[notebooks]" and ".[compare]" do).
    code = "\n".join("".join(cell["source"]) for _, cell in code_cells(path))
    for name in sorted(set(re.findall(r"^\s*(?:from|import) (lm_eval|ray|torch|transformers)\b", code, re.M))):
        pytest.importorskip(name)
    # The bundled model is part of the product, and every notebook is written for it: no skip.
    assert (BUNDLED / "config.json").is_file() and HELDOUT.is_file(), \
        f"the bundled model is missing ({BUNDLED}, {HELDOUT.name}); scripts/train_bundled.py makes it"

    monkeypatch.setenv("MPLBACKEND", "Agg")   # no display; figures stay open for the check below
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(FIGURE_CHECK))
    running = [None]
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
                                     on_cell_execute=lambda cell, cell_index: running.__setitem__(0, cell_index))
    start = time.perf_counter()
    failure = None
    try:
        client.execute()
    except Exception as error:   # CellExecutionError (shows the cell and traceback), CellTimeoutError, DeadKernelError
        failure = error
    if failure is not None:      # outside the except: the report is this message, not a chain of tracebacks
        i = running[0]
        where = "the figure check after the last cell" if i == len(nb.cells) - 1 else f"cell {i}"
        shown = "" if isinstance(failure, nbclient.exceptions.CellExecutionError) or i is None else nb.cells[i].source + "\n\n"
        pytest.fail(f"{path.name}: {where} failed ({type(failure).__name__}):\n{shown}{ANSI.sub('', str(failure))}",
                    pytrace=False)
    print(f"{path.name}: ran in {time.perf_counter() - start:.1f} s")
