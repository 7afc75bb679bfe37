"""The course in a real browser: JupyterLab serves the checkout, Chromium runs the masking lesson and types into its
mask explorer, then opens exercise 1 from the file browser and runs its first check."""

import re
import time

import pytest

pytestmark = pytest.mark.browser
LESSON = "nbs/03_masking.ipynb"  # the lesson that shows the mask explorer

RUN_CELLS = """async ([indices]) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  await panel.sessionContext.ready;
  for (const i of indices) {
    panel.content.activeCellIndex = i;
    await app.commands.execute('notebook:run-cell');
  }
}"""
RUN_ALL = """async () => {
  const panel = window.jupyterapp.shell.currentWidget;
  await panel.sessionContext.ready;
  await window.jupyterapp.commands.execute('notebook:run-all-cells');
}"""
KERNEL_IDLE_AND_DONE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const pending = cells.filter(c => c.model.executionCount === null || c.promptNode.textContent.includes('*'));
  return kernel && kernel.status === 'idle' && pending.length === 0;
}"""
ERRORS = """() => Array.from(document.querySelectorAll(
  '.jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]')).map(e => e.textContent.slice(0, 500))"""


def _open(page, lab, path):
    page.goto(f"{lab['base']}/lab/tree/{path}?token={lab['token']}")
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.shell.currentWidget && "
        "window.jupyterapp.shell.currentWidget.sessionContext",
        timeout=60_000,
    )


def _listing_item(page, name: str):
    "The file browser's row for `name`."
    text = page.locator(".jp-DirListing-itemText", has_text=re.compile(f"^{re.escape(name)}$"))
    return page.locator(".jp-DirListing-item", has=text).first


def _trained(page) -> int:
    return page.locator(".tok.trained").count()


def test_mask_explorer_in_the_masking_lesson(lab, browser, shots):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    t0 = time.perf_counter()
    _open(page, lab, LESSON)
    page.evaluate(RUN_ALL)
    try:
        page.wait_for_function(KERNEL_IDLE_AND_DONE, timeout=600_000, polling=1000)
    except Exception:
        page.screenshot(path=str(shots / "masking_lesson_timeout.png"))
        raise
    assert not page.evaluate(ERRORS), page.evaluate(ERRORS)
    explorer = page.locator(".mask-explorer").first
    explorer.scroll_into_view_if_needed()
    before, summary = _trained(page), explorer.locator(".mask-summary").inner_text()
    assert before > 0, "the explorer rendered no trained tokens"
    explorer.screenshot(path=str(shots / "mask_explorer_before.png"))
    response = explorer.locator(".widget-textarea:has(label:text-is('response')) textarea")
    response.fill(response.input_value() + " Check: 72 - 45 = 27, so the sum is right.")
    page.wait_for_function(f"() => document.querySelectorAll('.tok.trained').length > {before}", timeout=30_000)
    assert explorer.locator(".mask-summary").inner_text() != summary
    explorer.screenshot(path=str(shots / "mask_explorer.png"))
    page.screenshot(path=str(shots / "masking_lesson.png"))
    print(f"masking lesson run and explorer checked in {time.perf_counter() - t0:.1f} s")


def test_exercise_opened_from_the_file_browser_says_not_attempted(lab, browser, shots):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{lab['base']}/lab?token={lab['token']}")
    page.wait_for_selector(".jp-DirListing-item", timeout=60_000)
    page.locator(".jp-BreadCrumbs-home").first.click()  # the file browser may remember another folder
    _listing_item(page, "exercises").dblclick()
    _listing_item(page, "01_instruction_dataset.ipynb").dblclick()
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget && "
        "window.jupyterapp.shell.currentWidget.context && "
        "window.jupyterapp.shell.currentWidget.context.path.endsWith('01_instruction_dataset.ipynb')",
        timeout=60_000,
    )
    panel_id, check_cell = page.evaluate("""async () => {
        const panel = window.jupyterapp.shell.currentWidget;
        await panel.context.ready;
        await panel.revealed;
        const cells = panel.content.widgets;
        return [panel.id, cells.findIndex(c => c.model.sharedModel.getSource().trim() === 'q1.check()')];
    }""")
    assert check_cell > 0
    page.evaluate(RUN_CELLS, [[1, check_cell]])
    # in this notebook's panel: lessons restored from the workspace (03's Try it checks) print the same verdict
    verdict = page.locator(f"[id='{panel_id}'] .jp-OutputArea-output", has_text="Not attempted yet").first
    verdict.wait_for(timeout=120_000)
    verdict.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "exercise_not_attempted.png"))
