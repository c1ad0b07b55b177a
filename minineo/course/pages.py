"""The notebooks as static HTML pages a class can open: executed, with their figures, and a home page.

Pages work offline and from a plain folder: figures are embedded in the page, and nothing is loaded
from a CDN: require.js (only widgets need it) and MathJax are left out. Formulas are typeset at build
time instead, TeX to MathML (latex2mathml, 80 kB of pure Python), which browsers draw natively with no
script and no font to fetch. (A local MathJax 2 from jupyter-server-mathjax was tried: it lacks the TeX
fonts the notebooks' blackboard-bold letters need, and the browser logs the failed font loads as errors.)

The home page (index.html) lists every notebook of the course in lesson order, each with its objectives
and time read from the notebook itself, so that a build of a few pages keeps the others in it.
"""
import html
import json
import os
import re
import tempfile
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
        from traitlets.config import Config
        from nbclient import NotebookClient
        from nbconvert import HTMLExporter
        import latex2mathml  # noqa: F401   the formulas, typeset at build time
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
            with mock.patch.dict(os.environ, {"PYTHONPATH": pythonpath}), tempfile.TemporaryDirectory() as sockets:
                os.environ.pop("MPLBACKEND", None)
                # over local sockets, not TCP: the kernel has nothing to warn about (an unencrypted TCP port)
                settings = Config()
                settings.KernelManager.transport, settings.KernelManager.ip = "ipc", str(Path(sockets) / "kernel")
                NotebookClient(nb, config=settings, kernel_name="python3", timeout=CELL_TIMEOUT,
                               resources={"metadata": {"path": str(path.parent)}}).execute()
        try:
            formulas = typeset(nb)
        except MinineoError as error:
            raise MinineoError(f"{path}: {error}") from None
        hide_paths(nb)
        relative = Path(path.parent.name) / path.name if path.parent.name == "exercises" else Path(path.name)
        page = out / relative.with_suffix(".html")
        page.parent.mkdir(parents=True, exist_ok=True)
        exporter = HTMLExporter(template_name="lab", embed_images=True)
        title = title_of(nb, path)
        nb.metadata["title"] = title   # the page's <title>
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"path": str(path.parent), "name": title}})
        body = put_formulas(CDN_SCRIPTS.sub("", body), formulas)
        home = ('<p style="font-family: system-ui, sans-serif; font-size: 0.9rem; margin: 0.6rem 1rem"><a href="'
                + ("../" if page.parent != out else "") + 'index.html">minineo: the course</a> (all the lessons)</p>')
        body = body.replace("<head>", '<head>\n<link rel="icon" href="data:,">', 1)
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + "\n" + home, body, count=1)
        page.write_text(body, encoding="utf-8")
        pages.append((page, title))
        log(f"{page.relative_to(out)}: {title} ({time.perf_counter() - start:.1f} s)")
    listed = write_index(out, pages)
    log(f"{len(pages)} pages built; {out / 'index.html'} lists {listed} of the course's {len(default_notebooks())} notebooks")
    return pages


# ---- formulas: TeX in markdown cells to MathML -----------------------------------------------------------

CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)                       # code is left as it is
MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$(?!\d)", re.S)


def typeset(nb):  # every $...$ and $$...$$ of the markdown cells as a placeholder -> {placeholder: MathML}
    # The MathML goes in after the export: nbconvert's markdown renderer takes inline HTML a tag at a time,
    # and re-parsing each tag alone (to embed images) would close <math> before its contents.
    formulas = {}

    def hold(mathml):
        key = f"minineoformula{len(formulas):05d}x"
        formulas[key] = mathml
        return key
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = typeset_text(cell.source, place=hold)
    return formulas


def put_formulas(body, formulas):  # the placeholders, as MathML in the text and as "math" in ids and links
    if not formulas:
        return body
    key = re.compile(r"minineoformula\d{5}x")
    body = re.sub(r'(?:id|href)="[^"]*"', lambda m: key.sub("math", m.group(0)), body)
    return key.sub(lambda m: formulas[m.group(0)], body)


def typeset_text(text, escape=lambda plain: plain, place=lambda mathml: mathml):  # escape: the text between formulas
    from latex2mathml.converter import convert

    def outside(plain):
        pieces, last = [], 0
        for match in MATH.finditer(plain):
            display = match.group(1) is not None
            tex = (match.group(1) if display else match.group(2)).strip()
            try:
                mathml = convert(tex, display="block" if display else "inline")
            except Exception as error:   # latex2mathml's own errors have no common base class
                raise MinineoError(f"a formula latex2mathml cannot typeset: {match.group(0)!r} "
                                   f"({type(error).__name__}: {error})") from None
            pieces += [escape(plain[last:match.start()]), place(mathml)]
            last = match.end()
        return "".join(pieces + [escape(plain[last:])])
    return "".join(part if CODE.fullmatch(part) else outside(part) for part in CODE.split(text))


# ---- no build machine's paths on a page -------------------------------------------------------------------

def hide_paths(nb):  # where an output names a file of this checkout or of this machine's home, say it relatively
    places = sorted({str(ROOT), str(Path.home()), tempfile.gettempdir()}, key=len, reverse=True)

    def clean(text):
        for place in places:
            text = text.replace(place + os.sep, "" if place == str(ROOT) else "~/" if place == str(Path.home())
                                else "/tmp/").replace(place, "." if place == str(ROOT) else "~")
        return text
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = clean(output["text"])
            for kind, value in output.get("data", {}).items():
                if kind.startswith("text/") and isinstance(value, str):
                    output["data"][kind] = clean(value)


# ---- the home page ---------------------------------------------------------------------------------------------

EXERCISE_LESSON = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8}   # exercise notebook N goes with demonstration notebook M


def lesson_of(path):  # -> (lesson number, 0 for the demonstration and 1 for the exercise)
    number = int(re.match(r"\d+", path.name).group()) if re.match(r"\d+", path.name) else 99
    return (EXERCISE_LESSON.get(number, 99), 1) if path.parent.name == "exercises" else (number, 0)


def about(path):  # -> (title, objectives, time) as the notebook's first cell states them
    nb = json.loads(path.read_text(encoding="utf-8"))
    first = "".join(nb["cells"][0]["source"]) if nb.get("cells") else ""
    title = re.search(r"^# (.+)$", first, re.MULTILINE)
    time_line = re.search(r"\*\*Time:\*\*\s*([^\n]+)", first)
    listed = re.search(r"(\*\*Learning objectives\.\*\*|\*\*You will:\*\*)[^\n]*\n((?:- [^\n]*\n?)+)", first)
    objectives = re.findall(r"^- (.+)$", listed.group(2) if listed else "", re.MULTILINE)
    return (title.group(1).strip() if title else path.stem, [o.rstrip(";.") for o in objectives],
            time_line.group(1).strip() if time_line else "")


def page_name(path):  # the page's path in the site
    return (Path("exercises") / path.name if path.parent.name == "exercises" else Path(path.name)).with_suffix(".html")


STYLE = """body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color: rgba(0, 0, 0, 0.87); max-width: 62rem; margin: 2rem auto; padding: 0 1.5rem; line-height: 1.5; font-size: 15px; }
h1 { font-size: 1.9rem; margin-bottom: 0.2rem; } h2 { font-size: 1.25rem; margin: 1.8rem 0 0.6rem;
  border-bottom: 1px solid #e0e0e0; padding-bottom: 0.2rem; }
a { color: #1976d2; text-decoration: none; } a:hover { text-decoration: underline; }
.card { border: 1px solid #e0e0e0; border-radius: 4px; padding: 0.6rem 1rem; margin: 0.6rem 0; background: #fafafa; }
.card h3 { font-size: 1.05rem; margin: 0; } .kind { color: #616161; font-weight: normal; font-size: 0.85rem; }
.card ul { margin: 0.3rem 0 0.2rem 1.2rem; padding: 0; } .time { color: #616161; font-size: 0.9rem; margin: 0.2rem 0 0; }
.missing { color: #9e9e9e; } code { font-family: SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em;
  background: #eeeeee; padding: 0 0.2rem; border-radius: 3px; }"""


def write_index(out, pages):  # the course home page: every notebook in lesson order; built ones linked
    out = Path(out)
    built = {page.relative_to(out).as_posix() for page, _ in pages}
    notebooks = default_notebooks()
    known = {page_name(p).as_posix() for p in notebooks}
    extra = [p for p, _ in pages if p.relative_to(out).as_posix() not in known]
    groups = {}
    for path in sorted(notebooks, key=lesson_of):
        groups.setdefault(lesson_of(path)[0], []).append(path)
    sections, listed = [], 0
    for lesson, paths in groups.items():
        cards = []
        for path in paths:
            title, objectives, minutes = about(path)
            href = page_name(path).as_posix()
            here = href in built or (out / href).is_file()
            listed += here
            kind = "exercises" if path.parent.name == "exercises" else "demonstration"
            name = f'<a href="{href}">{html.escape(title)}</a>' if here else \
                f'{html.escape(title)} <span class="missing">(not built here: <code>python -m minineo.course pages OUT ' \
                f'{html.escape(path.relative_to(ROOT).as_posix())}</code>)</span>'
            items = "".join(f"<li>{inline(o)}</li>" for o in objectives)
            cards.append(f'<div class="card"><h3>{name} <span class="kind">{kind}</span></h3>'
                         f'{f"<ul>{items}</ul>" if items else ""}'
                         f'{f"<p class=time>Time: {inline(minutes)}</p>" if minutes else ""}</div>')
        heading = about(paths[0])[0]   # the lesson's first notebook's title, without "Exercise 6." or "3."
        heading = re.sub(r"^\d+\. ", "", heading.split(". ", 1)[-1] if paths[0].parent.name == "exercises" else heading)
        sections.append(f"<h2>Lesson {lesson}: {inline(heading)}</h2>\n" + "\n".join(cards))
    if extra:
        sections.append("<h2>Other pages</h2>\n" + "\n".join(
            f'<div class="card"><h3><a href="{p.relative_to(out).as_posix()}">{html.escape(t)}</a></h3></div>'
            for p, t in pages if p in extra))
        listed += len(extra)
    (out / "index.html").write_text(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">"
        f"<title>minineo: the course</title>\n<style>\n{STYLE}\n</style></head>\n<body>\n<h1>minineo: the course</h1>\n"
        "<p>GPT-Neo in plain NumPy, lesson by lesson: a demonstration notebook to read and run, then exercises to write "
        "(check yours with <code>python -m minineo.check NAME FILE.py</code>; "
        "<code>python -m minineo.course setup DIR</code> makes a student's folder).</p>\n"
        + "\n".join(sections) + "\n</body>\n</html>\n", encoding="utf-8")
    return listed


def inline(text):  # a line of a notebook's markdown, for the home page: code spans and formulas kept
    return "".join(f"<code>{html.escape(part.strip('`'))}</code>" if CODE.fullmatch(part) else
                   typeset_text(part, lambda plain: html.escape(plain.replace("**", ""), quote=False))
                   for part in CODE.split(text))
