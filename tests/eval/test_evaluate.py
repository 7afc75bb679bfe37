"Evaluation: metrics against hand-computed cases, evaluate's aggregates and bad input, strict judge parsing and agreement, contamination, forgetting."

import numpy as np
import pytest

from instruct_course.core import CourseError
from instruct_course.eval.evaluate import (
    METRICS,
    EvalResult,
    Judge,
    _ranks,
    check_eval_records,
    contamination_report,
    evaluate,
    exact_match,
    forgetting,
    judge_agreement,
    judge_sample,
    ngram_overlap,
    ngrams,
    normalize_text,
    parse_choice,
    parse_score,
    plant_leak,
    rouge_l,
    score_with_without,
    spearman,
    squad_tokens,
    token_f1,
)
from instruct_course.models import load_model, load_tokenizer
from instruct_course.data.world import eval_keys, make_splits, pretraining_text


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


@pytest.fixture(scope="module")
def sft():
    return load_model("tiny-sft", device="cpu")


@pytest.fixture(scope="module")
def splits():
    return make_splits(seed=0, n_train=60, n_eval=4)


# ---------------------------------------------------------------- metrics
def test_exact_match_hand_cases():
    assert exact_match("positive", " positive\n") == 1.0
    assert exact_match("Positive", "positive") == 0.0
    assert exact_match("1 + 1 = 2. The answer is 2.", "One and one. The answer is 2.", task="arithmetic") == 1.0
    assert exact_match("The answer is 3.", "1 + 1 = 2. The answer is 2.", task="arithmetic") == 0.0
    assert exact_match("The answer is 2.", "1 + 1 = 2. The answer is 2.") == 0.0  # no task: plain string equality


def test_token_f1_hand_cases():
    assert squad_tokens("The Cat, sat!") == ["cat", "sat"]
    assert token_f1("The cat sat on the mat.", "a cat sat on a red mat") == pytest.approx(8 / 9)
    # multiset overlap: 'cat' matched once -> P = 1/3, R = 1/2
    assert token_f1("cat cat cat", "cat dog") == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "cat") == 0.0 and token_f1("the", "cat") == 0.0


def test_rouge_l_hand_cases():
    assert rouge_l("x b c d", "x c b d") == pytest.approx(0.75)  # LCS 3 of 4 words
    assert token_f1("x b c d", "x c b d") == 1.0  # F1 ignores order, ROUGE-L does not
    assert rouge_l("the black cat", "the cat") == pytest.approx(0.8)
    assert rouge_l("a b", "c d") == 0.0
    assert set(METRICS) == {"exact_match", "token_f1", "rouge_l"}


# ---------------------------------------------------------------- evaluate
def test_evaluate_scores_per_family_and_matches_sft(tok, sft, splits):
    from instruct_course.train.sft import evaluate_exact_match

    recs = splits["heldout_instances"]
    r = evaluate(sft, tok, recs, progress=False)
    assert isinstance(r, EvalResult) and r.n == len(recs) and r.splits == ["eval"]
    ref = evaluate_exact_match(sft, tok, recs)
    assert r.overall()["exact_match"] == pytest.approx(ref["exact_match"])
    assert {f: v["exact_match"] for f, v in r.per_family().items()} == pytest.approx(ref["per_task"])
    assert r.overall()["exact_match"] > 0.6  # the shipped SFT model answers held-out instances
    # each item's scores are the metric functions applied to its prediction
    p = r.predictions[0]
    assert p["token_f1"] == token_f1(p["prediction"], p["response"]) and p["rouge_l"] == rouge_l(
        p["prediction"], p["response"]
    )
    t = r.table()
    assert list(t.columns) == ["exact_match", "token_f1", "rouge_l", "n"] and "overall" in t.index
    assert r.plot() is not None


def test_evaluate_macro_average_and_splits(tok, sft, splits):
    r = evaluate(
        sft,
        tok,
        {"a": splits["heldout_instances"], "b": splits["heldout_families"]},
        metrics="exact_match",
        progress=False,
    )
    assert r.splits == ["a", "b"] and r.n == len(splits["heldout_instances"]) + len(splits["heldout_families"])
    pf = r.per_family("a")
    assert r.overall("a")["exact_match"] == pytest.approx(np.mean([v["exact_match"] for v in pf.values()]))
    t = r.table()
    assert ("b", "overall") in t.index
    with pytest.raises(CourseError, match="several splits"):
        r.overall()


def test_evaluate_base_model_scores_zero_em(tok, splits):
    base = load_model("tiny", device="cpu")
    r = evaluate(base, tok, splits["heldout_instances"][:12], max_new_tokens=16, progress=False)
    assert r.overall()["exact_match"] == 0.0  # the base model does not answer instructions
    assert r.overall()["token_f1"] >= 0.0


def test_evaluate_bad_input(tok, sft, splits):
    with pytest.raises(CourseError, match="empty"):
        evaluate(sft, tok, [], progress=False)
    with pytest.raises(CourseError, match="empty"):
        evaluate(sft, tok, {}, progress=False)
    bad = [dict(splits["heldout_instances"][0]), {"instruction": "x", "response": "y"}]
    with pytest.raises(CourseError, match=r"record 1: missing field 'task'"):
        evaluate(sft, tok, bad, progress=False)
    with pytest.raises(CourseError, match=r"record 0: field 'response' must be a string"):
        check_eval_records([{"instruction": "x", "response": 3, "task": "qa"}])
    with pytest.raises(CourseError, match="no overlap"):
        evaluate(sft, tok, splits["heldout_families"], families=["sentiment", "qa"], progress=False)
    with pytest.raises(CourseError, match="unknown metric"):
        evaluate(sft, tok, splits["heldout_families"], metrics=["bleu"], progress=False)
    r = evaluate(sft, tok, splits["heldout_families"], families=["antonym"], progress=False)
    assert r.dropped == {"compare": 4} and r.n == 4  # dropped records are counted


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
    assert list(_ranks(np.array([10, 20, 20, 5]))) == [2, 3.5, 3.5, 1]
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0) and spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(
        -1.0
    )
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_judge_runs_on_a_loaded_model_and_swaps_positions(tok, sft):
    "The tiny SFT model as a (bad) judge: checks the plumbing: prompts, strict parsing, both orders asked."
    j = Judge(sft, tok, max_new_tokens=3, chat=False)
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
        Judge(sft)
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


# ---------------------------------------------------------------- forgetting
def test_forgetting_sft_raises_perplexity(tok, sft, splits):
    base = load_model("tiny", device="cpu")
    texts = pretraining_text(seed=1, n_docs=40, exclude=eval_keys(splits))
    f = forgetting(base, sft, tok, texts)
    assert f["ratio"] == pytest.approx(f["ppl_after"] / f["ppl_before"]) and f["ppl_after"] > f["ppl_before"]
    same = forgetting(base, base, tok, texts)
    assert same["ratio"] == pytest.approx(1.0)  # the failure side: an unchanged model shows no forgetting
    with pytest.raises(CourseError, match="no text"):
        forgetting(base, sft, tok, [])
