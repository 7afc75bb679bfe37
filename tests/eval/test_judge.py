"""The LLM judge: strict grade and choice parsing, agreement with gold computed by hand, position swapping, the
prompts, and the plumbing on a loaded model."""

import numpy as np
import pytest

from instruct_course.core import CourseError
from instruct_course.eval.judge import (
    Judge,
    confusion_table,
    grade_reply,
    judge_agreement,
    judge_sample,
    pair_prompts,
    pair_verdict,
    pairwise_summary,
    parse_choice,
    score_prompt,
)
from instruct_course.experiments.judge import run_judge_agreement
from instruct_course.metrics import parse_grade, ranks, spearman


def parse_score(reply):
    "The judge's 1-5 grade, strictly parsed."
    return parse_grade(reply, 5)


# ---------------------------------------------------------------- judge
def test_parse_score_is_strict():
    assert [parse_score(s) for s in ["4", "5.\nbecause", "Score: 3", "2/5", "1 out of 5", " grade: 2 "]] == [
        4,
        5,
        3,
        2,
        1,
        2,
    ]
    for s in ["1 = wrong or", "15", "0", "6", "The answer is 4", "3-4", "", None, "four", "4 because it is right"]:
        assert parse_score(s) is None, s
    assert [parse_choice(s) for s in ["A", "b.", "Answer B", "(A)"]] == ["A", "B", "B", "A"]
    assert [parse_choice(s) for s in ["AB", "Both", "A and B", "", None]] == [None] * 5


class _Scripted:
    def __init__(self, replies):
        self.replies = replies

    def score_many(self, items, progress=False):
        return [{"score": parse_score(r), "raw": r, "parseable": parse_score(r) is not None} for r in self.replies]


def _recs():
    recs = [dict(instruction=f"Say {w}", input="", response=w, task="copy") for w in "xyzuvw"]
    return recs, ["x", "y", "z", "no", "no", "no"]


def test_judge_agreement_hand_computed():
    recs, preds = _recs()
    ag = judge_agreement(_Scripted(["5", "4", "banana", "2", "3", "1"]), recs, preds)
    assert (ag["n"], ag["parsed"], ag["unparseable"]) == (6, 5, 1) and ag["unparseable_rate"] == pytest.approx(1 / 6)
    assert ag["accuracy"] == pytest.approx(4 / 5)  # the wrong answer graded 3 counts against
    assert ag["point_biserial"] == pytest.approx(0.8660254, abs=1e-6)
    # Spearman: ranks of [5,4,2,3,1] = [5,4,2,3,1]; ranks of [1,1,0,0,0] = [4.5,4.5,2,2,2]
    assert ag["spearman"] == pytest.approx(np.corrcoef([5, 4, 2, 3, 1], [4.5, 4.5, 2, 2, 2])[0, 1])
    assert ag["mean_score_correct"] == 4.5 and ag["mean_score_wrong"] == 2.0
    assert ag["confusion"]["EM=1"] == {"1": 0, "2": 0, "3": 0, "4": 1, "5": 1, "unparseable": 1}
    assert ag["majority_baseline"] == pytest.approx(3 / 5)


def test_judge_agreement_failure_side():
    recs, preds = _recs()
    flat = judge_agreement(_Scripted(["5"] * 6), recs, preds)  # a judge that says 5 to everything
    assert flat["accuracy"] == 0.5 and flat["spearman"] is None and flat["point_biserial"] is None
    inverted = judge_agreement(_Scripted(["1", "1", "1", "5", "5", "5"]), recs, preds)
    assert inverted["accuracy"] == 0.0 and inverted["point_biserial"] == pytest.approx(-1.0)
    none = judge_agreement(_Scripted(["?"] * 6), recs, preds)  # never mapped to a score
    assert none["unparseable"] == 6 and none["accuracy"] is None
    with pytest.raises(CourseError, match="6 records but 2 predictions"):
        judge_agreement(_Scripted(["5"]), recs, preds[:2])


def test_ranks_and_spearman():
    assert list(ranks(np.array([10, 20, 20, 5]))) == [2, 3.5, 3.5, 1]
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0) and spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(
        -1.0
    )
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_judge_runs_on_a_loaded_model_and_swaps_positions(tok, tiny_sft):
    "The tiny SFT model as a (bad) judge: checks the plumbing: prompts, strict parsing, both orders asked."
    j = Judge(tiny_sft, tok, max_new_tokens=3, chat=False)
    out = j.score("Say yes.", "", "yes", reference="yes")
    assert set(out) == {"score", "raw", "parseable"} and (out["score"] is None) == (not out["parseable"])
    assert out["score"] is None or 1 <= out["score"] <= 5
    cmp = j.compare_many([dict(instruction="Say yes.", a="yes", b="no"), dict(instruction="Say no.", a="yes", b="no")])
    assert cmp["asked"] == 4 and len(cmp["results"]) == 2
    for r in cmp["results"]:
        assert r["winner"] in ("a", "b", "tie/inconsistent") and (r["winner"] != "tie/inconsistent") == r["consistent"]
    ex = j.expected_scores(
        [dict(instruction="Say yes.", response="yes", reference="yes"), dict(instruction="Say no.", response="yes")]
    )
    assert len(ex) == 2 and all(
        1 <= e["score"] <= 5 and abs(sum(e["raw"]) - 1) < 1e-3 and 0 < e["digit_mass"] <= 1 for e in ex
    )
    recs, preds = _recs()
    ag = judge_agreement(j, recs, preds, mode="expected")
    assert (
        ag["unparseable"] == 0
        and ag["mode"] == "expected"
        and sum(sum(v.values()) for v in ag["confusion"].values()) == 6
    )
    with pytest.raises(CourseError, match="mode"):
        judge_agreement(j, recs, preds, mode="vibes")
    with pytest.raises(CourseError, match="tokenizer"):
        Judge(tiny_sft)
    with pytest.raises(CourseError, match="no items"):
        j.score_many([])


def test_compare_position_logic():
    "A judge that always answers 'A' is inconsistent on every pair; one that tracks content is consistent."

    class Fixed(Judge):
        def __init__(self, fn):
            self.fn = fn
            self.max_task_chars = 600

        def _ask(self, prompts, progress=False):
            return [self.fn(p) for p in prompts]

    always_a = Fixed(lambda p: "A").compare_many([dict(instruction="t", a="good", b="bad")] * 3)
    assert always_a["consistency_rate"] == 0.0 and always_a["first_position_rate"] == 1.0
    assert all(r["winner"] == "tie/inconsistent" for r in always_a["results"])
    smart = Fixed(lambda p: "A" if "Answer A: good" in p else "B").compare_many(
        [dict(instruction="t", a="good", b="bad")] * 3
    )
    assert (
        smart["consistency_rate"] == 1.0
        and all(r["winner"] == "a" for r in smart["results"])
        and smart["first_position_rate"] == 0.5
    )
    garbled = Fixed(lambda p: "Both are fine").compare_many([dict(instruction="t", a="x", b="y")])
    assert garbled["unparseable"] == 2 and garbled["results"][0]["winner"] == "tie/inconsistent"


def test_judge_sample_balanced():
    preds = [{"exact_match": float(i % 3 == 0), "i": i} for i in range(30)]
    s = judge_sample(preds, 10, seed=0)
    assert len(s) == 10 and sum(p["exact_match"] for p in s) == 5
    assert [p["i"] for p in s] == [p["i"] for p in judge_sample(preds, 10, seed=0)]


def test_prompts_and_verdicts():
    p = score_prompt("Add 2 and 3.", "", "5", reference="6", max_chars=600)
    assert "Reference answer: 6\nAnswer: 5\n" in p and "Reference" not in score_prompt("Add 2 and 3.", "", "5")
    assert score_prompt("x" * 50, "", "5", max_chars=10).count("x") == 10  # long tasks are cut
    a_first, b_first = pair_prompts({"instruction": "t", "a": "good", "b": "bad"})
    assert "Answer A: good\nAnswer B: bad" in a_first and "Answer A: bad\nAnswer B: good" in b_first
    assert pair_verdict("B", "A")["winner"] == "b" and pair_verdict("A", "?")["winner"] == "tie/inconsistent"
    s = pairwise_summary(["A", "B", "B", "B"])
    assert (s["consistency_rate"], s["first_position_rate"], s["asked"]) == (0.5, 0.25, 4)
    assert grade_reply("Score: 4") == {"score": 4, "raw": "Score: 4", "parseable": True}
    assert confusion_table([None, 3.4], [1, 0]) == {
        "EM=1": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0, "unparseable": 1},
        "EM=0": {"1": 0, "2": 0, "3": 1, "4": 0, "5": 0, "unparseable": 0},
    }


def test_judge_item_checks(tok, tiny_sft):
    j = Judge(tiny_sft, tok, max_new_tokens=2, chat=False)
    with pytest.raises(CourseError, match=r"judge items\[0\]: missing field 'response'"):
        j.score_many([{"instruction": "x"}])
    with pytest.raises(CourseError, match=r"judge pairs\[0\]: missing field 'b'"):
        j.compare_many([{"instruction": "x", "a": "y"}])
    with pytest.raises(CourseError, match="no pairs"):
        j.compare_many([])
    with pytest.raises(CourseError, match="no items"):
        j.expected_scores([])


def test_run_judge_agreement_keeps_the_cli_contract():
    import inspect

    params = inspect.signature(run_judge_agreement).parameters
    assert list(params)[:3] == ["out_dir", "seed", "quick"] and params["judge_model"].default == "smollm2"
