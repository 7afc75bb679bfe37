"""Evaluation: metrics against hand-computed cases, evaluate's aggregates and bad input, EvalResult, forgetting."""

import numpy as np
import pytest

from instruct_course.core import CourseError
from instruct_course.data.world import eval_keys, pretraining_text
from instruct_course.eval.evaluate import (
    METRICS,
    EvalResult,
    check_eval_records,
    evaluate,
    forgetting,
)
from instruct_course.metrics import exact_match, rouge_l, squad_tokens, token_f1


def _head(records, k):
    "The first k records of each family."
    seen = {}
    out = []
    for r in records:
        if seen.get(r["task"], 0) < k:
            out.append(r)
            seen[r["task"]] = seen.get(r["task"], 0) + 1
    return out


@pytest.fixture(scope="module")
def small(splits):
    "The world's held-out splits cut to 4 items per family (the shared `splits` fixture has 40)."
    return {k: _head(v, 4) for k, v in splits.items() if k != "train"}


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
def test_evaluate_scores_per_family_and_matches_sft(tok, tiny_sft, small):
    from instruct_course.train.sft import evaluate_exact_match

    recs = small["heldout_instances"]
    r = evaluate(tiny_sft, tok, recs, progress=False)
    assert isinstance(r, EvalResult) and r.n == len(recs) and r.splits == ["eval"]
    ref = evaluate_exact_match(tiny_sft, tok, recs)
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


def test_evaluate_macro_average_and_splits(tok, tiny_sft, small):
    r = evaluate(
        tiny_sft,
        tok,
        {"a": small["heldout_instances"], "b": small["heldout_families"]},
        metrics="exact_match",
        progress=False,
    )
    assert r.splits == ["a", "b"] and r.n == len(small["heldout_instances"]) + len(small["heldout_families"])
    pf = r.per_family("a")
    assert r.overall("a")["exact_match"] == pytest.approx(np.mean([v["exact_match"] for v in pf.values()]))
    t = r.table()
    assert ("b", "overall") in t.index
    with pytest.raises(CourseError, match="several splits"):
        r.overall()


def test_evaluate_base_model_scores_zero_em(tok, tiny, small):
    r = evaluate(tiny, tok, small["heldout_instances"][:12], max_new_tokens=16, progress=False)
    assert r.overall()["exact_match"] == 0.0  # the base model does not answer instructions
    assert r.overall()["token_f1"] >= 0.0


def test_evaluate_bad_input(tok, tiny_sft, small):
    with pytest.raises(CourseError, match="empty"):
        evaluate(tiny_sft, tok, [], progress=False)
    with pytest.raises(CourseError, match="empty"):
        evaluate(tiny_sft, tok, {}, progress=False)
    bad = [dict(small["heldout_instances"][0]), {"instruction": "x", "response": "y"}]
    with pytest.raises(CourseError, match=r"eval set\[1\]: missing field 'task'"):
        evaluate(tiny_sft, tok, bad, progress=False)
    with pytest.raises(CourseError, match=r"eval set\[0\]: field 'response' must be a string"):
        check_eval_records([{"instruction": "x", "response": 3, "task": "qa"}])
    with pytest.raises(CourseError, match="no overlap"):
        evaluate(tiny_sft, tok, small["heldout_families"], families=["sentiment", "qa"], progress=False)
    with pytest.raises(CourseError, match="unknown metric"):
        evaluate(tiny_sft, tok, small["heldout_families"], metrics=["bleu"], progress=False)
    r = evaluate(tiny_sft, tok, small["heldout_families"], families=["antonym"], progress=False)
    assert r.dropped == {"compare": 4} and r.n == 4  # dropped records are counted


# ---------------------------------------------------------------- forgetting
def test_forgetting_sft_raises_perplexity(tok, tiny, tiny_sft, splits):
    base = tiny
    texts = pretraining_text(seed=1, n_docs=40, exclude=eval_keys(splits))
    f = forgetting(base, tiny_sft, tok, texts)
    assert f["ratio"] == pytest.approx(f["ppl_after"] / f["ppl_before"]) and f["ppl_after"] > f["ppl_before"]
    same = forgetting(base, base, tok, texts)
    assert same["ratio"] == pytest.approx(1.0)  # the failure side: an unchanged model shows no forgetting
    with pytest.raises(CourseError, match="no text"):
        forgetting(base, tiny_sft, tok, [])


def test_eval_records_checks():
    ok = [{"instruction": "Say hi.", "input": "", "response": "hi", "task": "copy"}]
    assert check_eval_records(ok) == ok
    with pytest.raises(CourseError, match="make_splits"):
        check_eval_records(None)
    with pytest.raises(CourseError, match="expected a list of records"):
        check_eval_records("eval.jsonl")
    with pytest.raises(CourseError, match=r"my set\[0\]: field 'input' must be a string"):
        check_eval_records([{**ok[0], "input": None}], "my set")
    with pytest.raises(CourseError, match=r"eval.jsonl:7: missing field 'task'"):  # records read from a file: the line
        check_eval_records([{"instruction": "x", "response": "y", "_line": 7}], "eval.jsonl")


def test_eval_result_aggregates_by_hand():
    preds = [
        {"split": "s", "task": "qa", "exact_match": 1.0},
        {"split": "s", "task": "qa", "exact_match": 0.0},
        {"split": "s", "task": "sentiment", "exact_match": 1.0},
        {"split": "t", "task": "qa", "exact_match": 0.0},
    ]
    r = EvalResult(preds, ("exact_match",), ["s", "t"])
    assert r.overall("s") == {"exact_match": 0.75, "n": 3}  # the mean of the family means
    assert r.resolve_split("t") == "t" and r.to_dict()["per_family"]["t"] == {"qa": {"exact_match": 0.0, "n": 1}}
    with pytest.raises(CourseError, match="several splits"):
        r.resolve_split()
    with pytest.raises(CourseError, match="no split 'u'"):
        r.items("u")
