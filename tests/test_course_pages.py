"""The notebooks as HTML pages, opened in a real headless browser (Debian's chromium, driven by
Playwright): every page shows its title, every figure loads, no page logs a console error.

To stay inside the suite's time, the build executes one exercise notebook (the notebook tests
already execute the demonstrations) and converts one demonstration notebook as committed."""
import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from minineo.course.pages import NOTEBOOKS, build

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "test-artifacts"   # the screenshot a failing run leaves to look at (build/ is ignored)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("pages")
    executed = build(out, [NOTEBOOKS / "exercises" / "2_layer_norm.ipynb"], log=print)
    as_committed = build(out, [NOTEBOOKS / "02_layer_norm.ipynb"], execute=False, log=print)
    from minineo.course.pages import write_index
    write_index(out, executed + as_committed)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(out)))
    server.RequestHandlerClass.log_message = lambda *args: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield out, f"http://127.0.0.1:{server.server_port}/", executed + as_committed
    server.shutdown()


def test_pages_render_in_a_browser(site):
    from playwright.sync_api import sync_playwright
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "no chromium: apt-get install -y chromium (.ci/run does)"
    out, base, pages = site
    urls = {"index.html": "minineo: the notebooks", **{p.relative_to(out).as_posix(): title for p, title in pages}}
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
