"""The notebooks as static HTML pages a class can open: executed, with their figures, and an index.

Pages work offline and from a plain folder: figures are embedded in the page, and nothing is loaded
from a CDN: require.js (only widgets need it) and MathJax are left out, so formulas show as their TeX
source. (A local MathJax 2 from jupyter-server-mathjax was tried: it lacks the TeX fonts the notebooks'
blackboard-bold letters need, and the browser logs the failed font loads as errors.)
"""
import html
import os
import re
import time
from pathlib import Path
from unittest import mock

from ..errors import MinineoError

ROOT = Path(__file__).resolve().parent.parent.parent
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT = 600
CDN_SCRIPTS = re.compile(r'<script src="https://[^"]*"> ?</script>')


def default_notebooks():  # the demonstration notebooks, then the exercises
    return sorted(NOTEBOOKS.glob("*.ipynb")) + sorted((NOTEBOOKS / "exercises").glob("*.ipynb"))


def title_of(nb, path):  # the notebook's first markdown heading, else its file name
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^# (.+)$", cell.source, re.MULTILINE)
            if match:
                return match.group(1).strip()
    return path.stem


def build(out, notebooks=None, execute=True, log=print):  # -> [(page path, title)]; writes out/index.html
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbconvert import HTMLExporter
    except ImportError as error:
        raise MinineoError(f"building pages needs {error.name}: pip install -e '.[pages]'") from None
    out = Path(out)
    notebooks = [Path(p) for p in (notebooks or default_notebooks())]
    for path in notebooks:
        if not path.is_file():
            raise MinineoError(f"{path}: no such notebook")
    out.mkdir(parents=True, exist_ok=True)
    pages = []
    for path in notebooks:
        start = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        if execute:   # the kernel imports this minineo, and draws inline (MPLBACKEND would turn figures off)
            pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
            with mock.patch.dict(os.environ, {"PYTHONPATH": pythonpath}):
                os.environ.pop("MPLBACKEND", None)
                NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                               resources={"metadata": {"path": str(path.parent)}}).execute()
        relative = Path(path.parent.name) / path.name if path.parent.name == "exercises" else Path(path.name)
        page = out / relative.with_suffix(".html")
        page.parent.mkdir(parents=True, exist_ok=True)
        exporter = HTMLExporter(template_name="lab", embed_images=True)
        title = title_of(nb, path)
        nb.metadata["title"] = title   # the page's <title>
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"path": str(path.parent), "name": title}})
        body = CDN_SCRIPTS.sub("", body)
        page.write_text(body.replace("<head>", '<head>\n<link rel="icon" href="data:,">', 1), encoding="utf-8")
        pages.append((page, title))
        log(f"{page.relative_to(out)}: {title} ({time.perf_counter() - start:.1f} s)")
    write_index(out, pages)
    return pages


def write_index(out, pages):
    items = "\n".join(f'  <li><a href="{page.relative_to(out).as_posix()}">{html.escape(title)}</a></li>'
                      for page, title in pages)
    (out / "index.html").write_text(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\"><title>minineo: the notebooks</title></head>\n"
        "<body>\n<h1>minineo: the notebooks</h1>\n<p>GPT-Neo in plain NumPy: the demonstrations, then the exercises "
        "(check yours with <code>python -m minineo.check NAME FILE.py</code>).</p>\n<ul>\n"
        f"{items}\n</ul>\n</body>\n</html>\n", encoding="utf-8")
