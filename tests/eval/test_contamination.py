"""Contamination: n-grams and overlap by hand, a planted leak found in the world's splits, scores with and without
the flagged items."""

import pytest

from instruct_course.core import CourseError
from instruct_course.data.world import make_splits
from instruct_course.eval.contamination import (
    contamination_report,
    ngram_overlap,
    ngrams,
    normalize_text,
    plant_leak,
    record_text,
    score_with_without,
)
from instruct_course.eval.evaluate import EvalResult


# ---------------------------------------------------------------- contamination
def test_ngrams_and_overlap_hand_cases():
    assert normalize_text("Hello, World!  It's") == "hello world it s"
    assert (
        ngrams("a b c", 2) == [("a", "b"), ("b", "c")] and ngrams("a b", 5) == [("a", "b")] and ngrams("...", 2) == []
    )
    ov = ngram_overlap(
        ["the quick brown fox jumps"],
        ["The quick, brown fox!", "a slow red dog", "quick brown cat"],
        n=2,
        threshold=0.5,
    )
    assert [o["overlap"] for o in ov] == [1.0, 0.0, 0.5] and [o["flagged"] for o in ov] == [True, False, True]
    assert ov[2]["matches"] == ["quick brown"]
    gpt3 = ngram_overlap(["the quick brown fox"], ["quick brown cat dog"], n=2, threshold=None)  # any shared n-gram
    assert gpt3[0]["flagged"] and gpt3[0]["overlap"] == pytest.approx(1 / 3)
    with pytest.raises(CourseError, match="threshold"):
        ngram_overlap(["a"], ["a"], threshold=1.5)


def test_contamination_finds_planted_leak_and_passes_clean_set():
    s = make_splits(seed=0, n_train=200, n_eval=10)
    ev = s["heldout_instances"]
    clean = contamination_report(s["train"], ev, n=8, threshold=0.8)
    assert clean["flagged_rate"] <= 0.1  # nearly clean: only template near-duplicates
    assert contamination_report(s["train"], s["heldout_families"])["n_flagged"] == 0
    leak_idx = [3, 17, 42, 77]
    leaky = plant_leak(s["train"], ev, leak_idx, copies=2, seed=0)
    assert len(leaky) == len(s["train"]) + 8
    rep = contamination_report(leaky, ev, n=8, threshold=0.8)
    assert set(leak_idx) <= set(rep["flagged"])
    assert all(rep["items"][i]["overlap"] == 1.0 for i in leak_idx)
    # the failure side: without the leak those items are not all flagged at 100%
    assert not all(clean["items"][i]["overlap"] == 1.0 for i in leak_idx)
    with pytest.raises(CourseError, match="empty"):
        contamination_report(s["train"], [])


def test_score_with_without():
    preds = [{"task": "qa", "exact_match": v} for v in [1, 1, 0, 0, 1]]
    w = score_with_without(preds, flagged=[0, 1])
    assert (w["all"], w["clean"], w["flagged"], w["n_clean"], w["n_flagged"]) == (0.6, pytest.approx(1 / 3), 1.0, 3, 2)
    with pytest.raises(CourseError, match="no predictions"):
        score_with_without(preds, [0], families=["code"])


def test_record_text_and_eval_result_input():
    assert record_text("plain text") == "plain text"
    assert record_text({"instruction": "a", "input": "b", "response": "c", "task": "qa"}) == "a b c"
    r = EvalResult([{"split": "s", "task": "qa", "exact_match": 1.0}] * 2, ("exact_match",), ["s"])
    assert score_with_without(r, flagged=[1])["clean"] == 1.0
    two = EvalResult([{"split": "s", "task": "qa", "exact_match": 1.0}], ("exact_match",), ["s", "t"])
    with pytest.raises(CourseError, match="several splits"):
        score_with_without(two, flagged=[])
