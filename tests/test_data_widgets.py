"The data explorers (task mixing, generated records), driven through their Python API."

import pytest

from instruct_course.core import CourseError
from instruct_course.data_widgets import DataBrowser, MixingExplorer


def test_mixing_explorer_cap_moves_the_shares():
    mix = MixingExplorer({"a": 5000, "b": 1000, "c": 100})
    assert mix.shares["a"] == pytest.approx(5000 / 6100)
    mix.cap.value = 100
    assert mix.shares == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert "2 of 3 tasks capped" in mix.note.value and mix.chart.value.count('class="bar"') == 3
    with pytest.raises(CourseError):
        MixingExplorer({"a": -1})


def test_data_browser_pages_and_filters():
    recs = [{"instruction": f"task {i}", "status": "accepted", "reason": None} for i in range(11)]
    recs += [{"instruction": f"bad {i}", "status": "rejected", "reason": "rouge_similar"} for i in range(2)]
    br = DataBrowser(recs, page_size=5)
    assert "page 1 of 3" in br.label.value
    br.next_button.click()
    assert "task 5" in br.view.value and "task 0" not in br.view.value
    br.prev_button.click()
    br.prev_button.click()  # clamped at the first page
    assert br.page == 0
    br.filter.value = "rouge_similar"
    assert br.view.value.count('class="record"') == 2 and "rouge_similar" in br.view.value
    with pytest.raises(CourseError):
        DataBrowser("not a list")
