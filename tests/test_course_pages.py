"""The notebooks as HTML pages, opened in a real headless browser (Debian's chromium, driven by
Playwright): every page shows its title, every figure loads, every formula is typeset (MathML, no
`$...$` left in the text), no page logs a console error or shows a build machine's path; the home page
lists the course in lesson order, and a partial build keeps every page in it.

To stay inside the suite's time, the build executes one exercise notebook (the notebook tests
already execute the demonstrations) and converts one demonstration notebook as committed."""
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from minineo.course.pages import NOTEBOOKS, build, default_notebooks

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "test-artifacts"   # the screenshot a failing run leaves to look at (build/ is ignored)
BUILD_OUTPUT = []
MATH_DISPLAYS = ("math", "block math", "inline math")   # CSS display values chromium gives MathML it lays out
# the text a reader sees, without code (where a $ is a shell prompt or a string, not a formula)
PROSE = """(() => { const body = document.body.cloneNode(true);
  body.querySelectorAll('pre, code, script, style, .jp-InputArea, .jp-OutputArea').forEach(e => e.remove());
  return body.innerText; })()"""
# every formula: MathML that chromium lays out as math (display "block math" / "inline math"), with a size
FORMULAS = """Array.from(document.querySelectorAll('math')).map(m => {
  const box = m.getBoundingClientRect();
  return [getComputedStyle(m).display, box.width > 0 && box.height > 0, m.textContent.slice(0, 30)]; })"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("pages")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "minineo.course", "pages", out, NOTEBOOKS / "exercises" / "2_layer_norm.ipynb"],
                          capture_output=True, text=True, env=env, timeout=600)
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    executed = [(out / "exercises" / "2_layer_norm.html", "Exercise 2. Layer norm")]
    # a second, partial build (converted as committed): the index keeps the first build's page
    as_committed = build(out, [NOTEBOOKS / "02_layer_norm.ipynb"], execute=False, log=print)
    BUILD_OUTPUT.append(done.stdout + done.stderr)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):   # no line per request in the test's output
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield out, f"http://127.0.0.1:{server.server_port}/", executed + as_committed
    server.shutdown()


def test_pages_render_in_a_browser(site):
    from playwright.sync_api import sync_playwright
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "no chromium: apt-get install -y chromium (.ci/run does)"
    out, base, pages = site
    urls = {"index.html": "minineo: the course", **{p.relative_to(out).as_posix(): title for p, title in pages}}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("requestfailed", lambda request: errors.append(f"could not load {request.url}"))
        outside = []   # a page a class opens offline must load nothing from the internet
        page.on("request", lambda request: None if request.url.startswith((base, "data:")) else outside.append(request.url))
        for url, title in urls.items():
            errors.clear()
            outside.clear()
            page.goto(base + url, wait_until="networkidle")
            images = page.evaluate("Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0, i.src.slice(0, 60)])")
            heading = page.evaluate("document.querySelector('h1') && document.querySelector('h1').textContent")
            print(f"{url}: title {page.title()!r}, {len(images)} images, console errors {errors}")
            assert page.title() == title and title in (heading or ""), f"{url}: title {page.title()!r}, heading {heading!r}"
            assert all(loaded for loaded, _ in images), f"{url}: images that did not load: {[s for ok, s in images if not ok]}"
            assert not errors, f"{url}: console errors {errors}"
            prose = page.evaluate(PROSE)
            left = re.findall(r"\$\$?[^$\n]+\$\$?", prose)
            assert not left, f"{url}: formulas left as TeX: {left[:5]}"
            formulas = page.evaluate(FORMULAS)
            print(f"  {len(formulas)} formulas, displays {sorted({d for d, _, _ in formulas})}")
            unset = [f for f in formulas if f[0] not in MATH_DISPLAYS or not f[1]]
            assert not unset, f"{url}: formulas not laid out as math: {unset[:5]}"
            if url != "index.html":
                assert formulas, f"{url}: no formula (the layer norm pages have several)"
                assert any(d == "block math" for d, _, _ in formulas), f"{url}: no display formula"
            if url != "index.html":
                assert images, f"{url}: no figure"
                assert not outside, f"{url}: loads from outside the pages: {outside}"
        page.goto(base + "exercises/2_layer_norm.html", wait_until="networkidle")
        page.screenshot(path=str(ARTIFACTS / "exercise_2_layer_norm.png"), full_page=True)
        print(f"screenshot: {ARTIFACTS / 'exercise_2_layer_norm.png'}")
        browser.close()


def test_the_executed_page_shows_the_checks_output(site):
    out, _, pages = site
    text = (out / "exercises" / "2_layer_norm.html").read_text(encoding="utf-8")
    assert "layer_norm: not written yet (it raises NotImplementedError)" in text and "data:image/png;base64" in text
    demo = (out / "02_layer_norm.html").read_text(encoding="utf-8")
    assert "data:image/png;base64" in demo   # the committed notebook's markdown figure (figures/shapes.png), embedded


def test_no_build_path_and_no_kernel_warning(site):
    out, _, pages = site
    assert "Kernel is running over TCP" not in BUILD_OUTPUT[0] and "WARNING" not in BUILD_OUTPUT[0], BUILD_OUTPUT[0]
    for page in [out / "index.html", *(p for p, _ in pages)]:
        text = page.read_text(encoding="utf-8")
        for place in {str(ROOT), str(out), str(Path.home()) + "/"}:
            assert place not in text, f"{page.name} shows a build path: {place}"


def test_the_home_page_lists_the_course_in_lesson_order(site):
    out, base, pages = site
    text = (out / "index.html").read_text(encoding="utf-8")
    lessons = [int(n) for n in re.findall(r"<h2>Lesson (\d+):", text)]
    assert lessons == sorted(lessons) and lessons[:5] == [1, 2, 3, 4, 5], lessons
    assert "http" not in text.replace("http://www.w3.org/1998/Math/MathML", ""), "the home page loads nothing from outside"
    cards = re.findall(r'<div class="card">(.*?)</div>', text, re.S)
    assert len(cards) == len(default_notebooks())   # every notebook, built or not
    for card in cards:
        assert "<li>" in card and "Time: " in card, card[:200]
    # the two built pages (two builds, the second partial) are linked; lesson 2's demonstration before its exercises
    assert text.index('href="02_layer_norm.html"') < text.index('href="exercises/2_layer_norm.html"')
    assert text.count('<a href="') == 2 and text.count("not built here") == len(cards) - 2
    assert "<math" in text   # an objective's formula (notebook 3's 1/sqrt(d_head)), typeset here too


def test_a_formula_that_cannot_be_typeset_is_one_line(tmp_path):
    import nbformat
    from minineo.errors import MinineoError
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Broken\n\nA formula: $\\frac{1}{$ and code `$x$`")])
    path = tmp_path / "broken.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(MinineoError) as error:
        build(tmp_path / "site", [path], execute=False, log=print)
    assert str(error.value).startswith(f"{path}: a formula latex2mathml cannot typeset: '$\\\\frac{{1}}{{$'"), str(error.value)
    assert "\n" not in str(error.value)
