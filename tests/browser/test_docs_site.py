"""The course site (`make docs`, built into _site/ by tests/test_docs.py too) in Chromium, offline: a lesson page
shows the plot saved in the notebook (`make outputs`), and the home page is the README with its results section.

The site is served from 127.0.0.1 on a free port; every request that leaves it is refused, so the test also shows the
pages need no network. Skipped, with the reason, when the site has not been built."""

import functools
import http.server
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_site"
LESSON = "nbs/04b_flan_mixing.html"  # its notebook has a matplotlib plot (and a widget) among its committed outputs


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site_url():
    "The built site over HTTP on 127.0.0.1 and a free port (what `python -m http.server -d _site` does)."
    if not (SITE / LESSON).is_file():
        pytest.skip(
            f"docs site test skipped: {SITE / LESSON} is not built (make docs, or run tests/test_docs.py first)"
        )
    if "data:image/png" not in (SITE / LESSON).read_text():
        pytest.skip(
            f"docs site test skipped: {LESSON} has no plot (make outputs NB=nbs/04b_flan_mixing.ipynb, then make docs)"
        )
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(SITE)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _offline_page(browser, base: str):
    "A page whose requests to anywhere but the site are refused (and recorded)."
    page, refused = browser.new_page(viewport={"width": 1280, "height": 900}), []

    def route(r):
        if r.request.url.startswith((base, "data:")):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return page, refused


def test_lesson_page_shows_its_plot(browser, site_url, shots):
    page, refused = _offline_page(browser, site_url)
    page.goto(f"{site_url}/{LESSON}", wait_until="load")
    assert "FLAN" in page.title()
    plots = page.locator(".jupyter-wrapper img[src^='data:image/png']")
    assert plots.count() >= 1
    plot = plots.first
    plot.scroll_into_view_if_needed()
    plot.wait_for(state="visible")
    w, h = plot.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert w > 0 and h > 0, "the plot did not decode"
    assert plot.bounding_box()["width"] > 100, "the plot is not shown at a readable size"
    page.screenshot(path=str(shots / "docs_lesson_plot.png"))
    # the page is styled (the shared notebook stylesheet loaded) and the widget is replaced by a note
    assert page.locator(".jupyter-wrapper .jp-Cell").first.evaluate("e => getComputedStyle(e).display") != "inline"
    assert page.get_by_text("an interactive widget; run this cell in Jupyter").count() >= 1
    print("requests refused (the page works without them):", refused)
    page.close()


def test_home_page_is_the_readme_with_results(browser, site_url):
    page, _ = _offline_page(browser, site_url)
    page.goto(f"{site_url}/index.html", wait_until="load")
    assert page.get_by_role("heading", name="Results, each with its source").count() == 1
    assert page.locator("a[href$='04_flan.html']").count() >= 1, "the navigation links the lessons"
    page.close()
