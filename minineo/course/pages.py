"""The notebooks as static HTML pages a class can open: executed, with their figures, and an index.

Pages work offline: figures are embedded in the page, MathJax is a local copy beside the pages
(from the jupyter-server-mathjax package), and require.js, which only widgets need, is left out.
"""
import html
import os
import re
import shutil
import time
from pathlib import Path
from unittest import mock

from ..errors import MinineoError

ROOT = Path(__file__).resolve().parent.parent.parent
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT = 600
REQUIRE_JS = re.compile(r'<script src="[^"]*require\.min\.js"></script>')
# No web fonts: jupyter-server-mathjax ships only STIX-Web, and browsers refuse web fonts to pages opened as
# files; MathJax then draws the formulas with the system's fonts, which works offline and from file://.
MATHJAX_FONTS = ('<script type="text/x-mathjax-config">MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], '
                 'webFont: null, imageFont: null}});</script>\n<!-- Load mathjax -->')


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
        import jupyter_server_mathjax
    except ImportError as error:
        raise MinineoError(f"building pages needs {error.name}: pip install -e '.[pages]'") from None
    out = Path(out)
    notebooks = [Path(p) for p in (notebooks or default_notebooks())]
    for path in notebooks:
        if not path.is_file():
            raise MinineoError(f"{path}: no such notebook")
    out.mkdir(parents=True, exist_ok=True)
    mathjax = out / "mathjax"
    if not (mathjax / "MathJax.js").is_file():
        shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", mathjax, dirs_exist_ok=True)
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
        up = os.path.relpath(out, page.parent)
        exporter = HTMLExporter(template_name="lab", embed_images=True,
                                mathjax_url=f"{up}/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe")
        title = title_of(nb, path)
        nb.metadata["title"] = title
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"path": str(path.parent), "name": title}})
        body = REQUIRE_JS.sub("", body).replace("<!-- Load mathjax -->", MATHJAX_FONTS, 1)
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
