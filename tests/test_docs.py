"""The course site builds offline (`make docs`: `instruct_course.site.build_site`, nbs/92b_site.ipynb) into _site/,
with a page for the home (the README), every notebook, the exercises and every module's API, and the lessons' committed
outputs (plots) on their pages. The build takes about a minute from scratch, ~25 s with mkdocs-jupyter's cache; it
leaves _site/ for the browser test (tests/browser/test_docs_site.py)."""

import configparser
import re
from pathlib import Path

import nbformat
import pytest

from instruct_course.outputs import course_notebooks
from instruct_course.site import api_modules, build_site, readme_notebook

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_site"


@pytest.fixture(scope="module")
def site() -> dict:
    for mod in ("mkdocs", "mkdocs_jupyter", "mkdocstrings_handlers.python"):
        pytest.importorskip(mod, reason=f"{mod} is not installed (a dev requirement: pip install -e '.[dev]')")
    return build_site(ROOT)


def _html(rel: str) -> str:
    return (SITE / rel).read_text()


def test_nbdev_clean_keeps_outputs():
    "settings.ini: nbdev_clean (make export, make test-sync) keeps the outputs that make outputs saves."
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "settings.ini")
    assert cfg["DEFAULT"]["clear_all"].strip().lower() == "false"


def test_site_builds_without_warnings(site):
    print(f"site built in {site['seconds']} s: {site['pages']} pages")
    assert site["warnings"] == [], "mkdocs warned:\n" + "\n".join(site["warnings"])


def test_every_page_exists(site):
    want = ["index.html", "exercises/index.html", "api/index.html"]
    want += [
        str(p.relative_to(ROOT).with_suffix(".html")) for p in course_notebooks(ROOT) if p != readme_notebook(ROOT)
    ]
    want += [str(p.relative_to(ROOT).with_suffix(".html")) for p in (ROOT / "exercises").glob("*.ipynb")]
    want += [f"api/{m}.html" for m in api_modules(ROOT)]
    missing = [w for w in want if not (SITE / w).is_file()]
    assert not missing, f"pages missing from {SITE}: {missing}"


def test_home_page_is_the_readme_with_its_results(site):
    home = _html("index.html")
    assert "Results, each with its source" in home and "results/peak.json" in home
    assert "{{" not in home


def test_lesson_pages_show_their_committed_plots(site):
    "Each notebook's saved PNG outputs are on its page (none is executed by the build)."
    for nb_path in course_notebooks(ROOT):
        if nb_path == readme_notebook(ROOT):
            continue
        nb = nbformat.read(nb_path, as_version=4)
        pngs = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
        page = _html(str(nb_path.relative_to(ROOT).with_suffix(".html")))
        assert page.count("data:image/png;base64") >= pngs, nb_path


def test_api_pages_show_the_docstrings(site):
    page = _html("api/instruct_course.core.html")
    assert "validate_records" in page and "CourseError" in page
    assert "Every `NAME.json`" in _html("api/instruct_course.site.html").replace("<code>", "`").replace("</code>", "`")


def test_links_between_notebooks_lead_to_pages(site):
    "A markdown link to another notebook (`[06a](06a_preferences.ipynb)`) points at its page, which exists."
    for nb_path in course_notebooks(ROOT):
        if nb_path == readme_notebook(ROOT):
            continue
        page = SITE / nb_path.relative_to(ROOT).with_suffix(".html")
        for c in nbformat.read(nb_path, as_version=4).cells:
            for target in re.findall(
                r"\]\((?![a-z]+:)([^)\s#]+?)\.ipynb", c.source if c.cell_type == "markdown" else ""
            ):
                assert f'href="{target}.html' in page.read_text(), (nb_path.name, target)
                assert (page.parent / f"{target}.html").resolve().is_file(), (nb_path.name, target)
