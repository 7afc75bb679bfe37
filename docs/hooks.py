"""MkDocs hooks of the course site (named in mkdocs.yml): notebook pages link one shared stylesheet instead of carrying
~570 kB of inline CSS each (`instruct_course.site.share_styles`, nbs/92b_site.ipynb)."""

from pathlib import Path

from instruct_course.site import share_styles

_SHEETS: dict[str, str] = {}


def on_page_content(html, page, config, files):
    html, sheets = share_styles(html, page.file.url)
    _SHEETS.update(sheets)
    return html


def on_post_build(config):
    for name, css in _SHEETS.items():
        f = Path(config["site_dir"]) / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(css)
