"""data.preferences: the gold labeler, corruptions, C(K,2) pairs grouped per prompt, type-checked rankings (issue 14
item 8), preference-file errors."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import instruct_course.data.preferences as P
from instruct_course.core import CourseError
from instruct_course.data.masking import format_prompt
from instruct_course.data.preferences import (
    CORRUPTIONS,
    GOLD_WEIGHTS,
    build_preference_data,
    check_ranking,
    corrupt,
    expand_rankings,
    gold_rank,
    gold_reward,
    gold_reward_parts,
    load_preferences,
    preferences_dataset,
    save_preferences,
    validate_preferences,
)


@pytest.fixture(scope="module")
def pairs(tiny_sft, tok, splits):
    recs = splits["train"][:24]
    return (
        build_preference_data(tiny_sft, tok, recs, k=4, seed=0, progress=False),
        dict(build_preference_data.last_stats),
        recs,
    )


# ---------------------------------------------------------------- gold labeler


def test_reference_beats_every_corruption_in_every_family(splits):
    rng = random.Random(0)
    recs = splits["heldout_instances"] + splits["heldout_families"] + splits["heldout_templates"]
    assert {r["task"] for r in recs} >= {"qa", "arithmetic", "code", "compare", "antonym", "translate"}
    for r in recs:
        assert gold_reward(r, r["response"]) == 1.0
        for k in CORRUPTIONS:
            c = corrupt(r, k, rng)
            assert c != r["response"] and gold_reward(r, c) < 1.0, (k, r, c)
            if k == "wrong_answer":
                assert gold_reward(r, c) <= 1 - GOLD_WEIGHTS["correct"] + 1e-9  # correct beats wrong, always


def test_gold_rank_orders_and_detects_reversal(splits):
    r = next(x for x in splits["train"] if x["task"] == "arithmetic")
    wrong = corrupt(r, "wrong_answer", random.Random(0))
    assert gold_rank(r, [wrong, r["response"]]) == [1, 0]
    assert gold_rank(r, [r["response"], wrong]) == [0, 1]
    parts = gold_reward_parts(r, wrong)
    assert parts["correct"] == 0 and parts["format"] == 1  # the subtle corruption: steps kept, final number changed


def test_labeler_without_correctness_fails_the_check(splits, monkeypatch):
    # failure side: a labeler that ignores correctness cannot tell a plausible wrong answer from the reference
    monkeypatch.setitem(P.GOLD_WEIGHTS, "correct", 0.0)
    rng = random.Random(0)
    ties = 0
    for r in splits["heldout_instances"]:
        c = corrupt(r, "wrong_answer", rng)
        ties += gold_reward(r, c) >= gold_reward(r, r["response"]) - 1e-9
    assert ties > 0


def test_gold_and_corrupt_refuse_bad_input():
    with pytest.raises(CourseError, match="'task'"):
        gold_reward({"response": "x"}, "x")
    with pytest.raises(CourseError, match="unknown task family"):
        gold_reward({"task": "nope", "response": "x"}, "x")
    with pytest.raises(CourseError, match="unknown corruption"):
        corrupt({"task": "plural", "response": "the cats"}, "shuffled", random.Random(0))
    with pytest.raises(CourseError, match="response must be a string"):
        gold_reward({"task": "plural", "response": "the cats"}, None)
    with pytest.raises(CourseError, match="must be a JSON object"):
        gold_reward("the cats", "the cats")


# ---------------------------------------------------------------- rankings -> pairs


def test_expand_rankings_counts_pairs_and_ties():
    p, st_ = expand_rankings(
        [
            {"prompt": "A", "responses": list("abcde"), "scores": [5, 4, 3, 2, 1]},
            {"prompt": "B", "responses": list("abcd"), "scores": [1, 1, 0, 0]},
        ]
    )
    assert len([x for x in p if x["prompt"] == "A"]) == math.comb(5, 2)
    assert len([x for x in p if x["prompt"] == "B"]) == math.comb(4, 2) - 2 and st_["ties_dropped"] == 2
    assert all(x["gold_chosen"] > x["gold_rejected"] for x in p)
    assert {x["group"] for x in p} == {0, 1}


def test_expand_rankings_accepts_ints_floats_and_numpy_numbers():
    np = pytest.importorskip("numpy")
    p, _ = expand_rankings([{"prompt": "P", "responses": ["a", "b", "c"], "scores": [1, 2.5, np.float32(0.5)]}])
    assert [(x["chosen"], x["rejected"]) for x in p] == [("b", "a"), ("a", "c"), ("b", "c")]
    p, _ = expand_rankings([{"prompt": "P", "responses": ["a", "b"], "scores": [np.int64(10), np.int64(9)]}])
    assert (p[0]["chosen"], p[0]["rejected"]) == ("a", "b")


# issue 14 item 8: every row is an input that the old code accepted (or failed on with a bare TypeError)
BAD_RANKINGS = [
    # scores as strings: "10" < "9" as text, so the old code made "b" the chosen one
    ({"prompt": "P", "responses": ["a", "b"], "scores": ["10", "9"]}, r"rankings\[0\]: scores\[0\] is '10' \(str\)"),
    ({"prompt": "P", "responses": ["a", "b"], "scores": [1.0, float("nan")]}, r"scores\[1\] is nan"),
    ({"prompt": "P", "responses": ["a", "b"], "scores": [float("inf"), 1.0]}, r"scores\[0\] is inf"),
    ({"prompt": "P", "responses": ["a", "b"], "scores": [None, 1]}, r"scores\[0\] is None \(NoneType\)"),
    ({"prompt": "P", "responses": ["a", "b"], "scores": [True, False]}, r"scores\[0\] is True \(bool\)"),
    ({"prompt": "P", "responses": ["a", "b"], "scores": [[1], [0]]}, r"scores\[0\] is \[1\] \(list\)"),
    # a string in place of the responses list: the old code ranked its characters
    ({"prompt": "P", "responses": "ab", "scores": [1, 0]}, r"field 'responses' must be a list, got str"),
    ({"prompt": "P", "responses": ["a", "b"], "scores": "10"}, r"field 'scores' must be a list, got str"),
    ({"prompt": "P", "responses": ["a", 7], "scores": [1, 0]}, r"responses\[1\] must be a string, got int"),
    ({"prompt": 3, "responses": ["a", "b"], "scores": [1, 0]}, r"field 'prompt' must be a string"),
    ({"prompt": "P", "responses": ["a", "b"], "scores": [1]}, r"2 responses but 1 scores"),
    ({"prompt": "P", "responses": ["a", "b"]}, r"missing field 'scores'"),
    ({"prompt": "P", "responses": ["a", "b"], "scores": [1, 0], "sources": ["x"]}, r"'sources' must be a list"),
    ("P\ta\tb", r"must be a JSON object"),
]


@pytest.mark.parametrize("ranking,message", BAD_RANKINGS, ids=[str(i) for i in range(len(BAD_RANKINGS))])
def test_expand_rankings_refuses_bad_rankings(ranking, message):
    with pytest.raises(CourseError, match=message):
        expand_rankings([ranking])
    with pytest.raises(CourseError, match=message.replace(r"rankings\[0\]", "x")):
        check_ranking(ranking, "x")


def test_string_scores_would_invert_the_preference():
    # why the check exists: compared as text, the better score loses
    assert "10" < "9"
    p, _ = expand_rankings([{"prompt": "P", "responses": ["ten", "nine"], "scores": [10, 9]}])
    assert (p[0]["chosen"], p[0]["rejected"]) == ("ten", "nine")


def test_expand_rankings_refuses_a_non_list_and_names_file_lines():
    with pytest.raises(CourseError, match="expected a list of records"):
        expand_rankings({"prompt": "P", "responses": ["a", "b"], "scores": [1, 0]})
    with pytest.raises(CourseError, match=r"prefs.jsonl:7: scores\[1\] is None"):
        expand_rankings(
            [{"prompt": "P", "responses": ["a", "b"], "scores": [1, None], "_line": 7}], where="prefs.jsonl"
        )
    with pytest.raises(CourseError, match="on_no_pairs must be"):
        expand_rankings([], on_no_pairs="skip")
    assert expand_rankings([]) == ([], {"prompts": 0, "pairs": 0, "ties_dropped": 0, "prompts_without_pairs": 0})


def test_expand_rankings_no_pairs_raises_or_counts():
    tied = [{"prompt": "P", "responses": ["a", "b", "c"], "scores": [1, 1, 1]}]
    with pytest.raises(CourseError, match="prompt has no pairs"):
        expand_rankings(tied)
    p, st_ = expand_rankings(tied, on_no_pairs="drop")
    assert p == [] and st_["prompts_without_pairs"] == 1 and st_["ties_dropped"] == 3


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=6), st.one_of(st.integers(-5, 5), st.floats(-3, 3, allow_nan=False))),
        min_size=2,
        max_size=6,
    )
)
def test_ranking_expansion_property(cands):
    # C(K,2) pairs minus ties; the chosen response always has the higher score
    responses, scores = [c[0] for c in cands], [c[1] for c in cands]
    p, st_ = expand_rankings([{"prompt": "P", "responses": responses, "scores": scores}], on_no_pairs="drop")
    k = len(cands)
    ties = sum(
        scores[i] == scores[j] or responses[i].strip() == responses[j].strip()
        for i in range(k)
        for j in range(i + 1, k)
    )
    assert len(p) == math.comb(k, 2) - ties == st_["pairs"] and st_["ties_dropped"] == ties
    assert all(x["gold_chosen"] > x["gold_rejected"] for x in p)


# ---------------------------------------------------------------- build_preference_data


def test_build_preference_data_expands_k_choose_2_grouped(pairs):
    ps, st_, recs = pairs
    assert st_["pairs"] + st_["ties_dropped"] == len(recs) * math.comb(4, 2)  # every pair kept or counted
    assert st_["prompts"] + st_["prompts_without_pairs"] == len(recs)
    by = {}
    for i, p in enumerate(ps):
        by.setdefault(p["group"], []).append(i)
    assert all(max(v) - min(v) + 1 == len(v) for v in by.values())  # a prompt's pairs are contiguous
    assert all(1 <= len(v) <= math.comb(4, 2) for v in by.values())
    for p in ps:
        rec = recs[p["group"]]
        assert p["prompt"] == format_prompt(rec["instruction"], rec["input"]) and p["task"] == rec["task"]
        assert p["chosen"] != p["rejected"] and p["gold_chosen"] > p["gold_rejected"]
        # recomputable
        assert gold_reward(p, p["chosen"]) == p["gold_chosen"]
        assert gold_reward(p, p["rejected"]) == p["gold_rejected"]
    assert any(p["source_rejected"].startswith("sample@") or p["source_chosen"].startswith("sample@") for p in ps)


def test_build_preference_data_other_k_and_determinism(tiny_sft, tok, splits):
    recs = splits["train"][30:36]
    a = build_preference_data(tiny_sft, tok, recs, k=5, seed=3, progress=False)
    st_ = build_preference_data.last_stats
    assert st_["pairs"] + st_["ties_dropped"] == len(recs) * math.comb(5, 2)
    assert a == build_preference_data(tiny_sft, tok, recs, k=5, seed=3, progress=False)
    with pytest.raises(CourseError, match="k must be"):
        build_preference_data(tiny_sft, tok, recs, k=1, progress=False)
    with pytest.raises(CourseError, match="k must be"):
        build_preference_data(tiny_sft, tok, recs, k=2.5, progress=False)
    with pytest.raises(CourseError, match="'task'"):
        build_preference_data(tiny_sft, tok, [{"instruction": "x", "response": "y"}], progress=False)
    with pytest.raises(CourseError, match="records is empty"):
        build_preference_data(tiny_sft, tok, [], progress=False)
    with pytest.raises(CourseError, match="temperatures must be positive"):
        build_preference_data(tiny_sft, tok, recs, temperatures=(0.0,), progress=False)


def test_build_preference_data_k2_needs_no_policy(splits):
    # K = 2: the reference against one corruption, no sampling at all
    recs = splits["train"][:8]
    ps = build_preference_data(None, None, recs, k=2, progress=False)
    assert len(ps) == len(recs) and all(p["source_chosen"] == "reference" for p in ps)


# ---------------------------------------------------------------- preference files: bad input


def test_preference_files_round_trip(pairs, tmp_path):
    ps = pairs[0]
    save_preferences(ps, tmp_path / "p.jsonl")
    assert load_preferences(tmp_path / "p.jsonl") == ps
    good = tmp_path / "rank.jsonl"
    good.write_text('{"prompt": "P", "responses": ["a", "b", "c"], "scores": [3, 2, 1]}\n')
    assert len(load_preferences(good)) == 3
    with pytest.raises(CourseError, match="no preference pairs"):
        validate_preferences([])


PAIR = '{"prompt": "P", "chosen": "a", "rejected": "b"}\n'
BAD_FILES = [
    (PAIR + '{"prompt": "P", "chosen": "same", "rejected": " same "}\n', r"bad.jsonl:2: chosen == rejected"),
    (PAIR + '\n{"prompt": "P", "chosen": "a"}\n', r"bad.jsonl:3: missing field 'rejected'"),
    ('{"prompt": "P", "chosen": "a", "rejected": 3}\n', r"field 'rejected' must be a string"),
    ('{"prompt": "P", "responses": ["a", "b", "c"], "scores": [1, 1, 1]}\n', r"bad.jsonl:1: prompt has no pairs"),
    ('{"prompt": "P", "responses": ["a", "b"], "scores": [1]}\n', r"2 responses but 1 scores"),
    (PAIR + '{"prompt": "P", "responses": ["a", "b"], "scores": ["10", "9"]}\n', r"bad.jsonl:2: scores\[0\] is '10'"),
    ('{"prompt": "P", "responses": ["a", "b"], "scores": [1, null]}\n', r"bad.jsonl:1: scores\[1\] is None"),
    ('{"prompt": "P", "responses": ["a", "b"], "scores": [1, NaN]}\n', r"bad.jsonl:1: scores\[1\] is nan"),
    ("\n", "no preference pairs"),
]


@pytest.mark.parametrize("content,message", BAD_FILES, ids=[str(i) for i in range(len(BAD_FILES))])
def test_bad_preference_files_name_file_and_line(tmp_path, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(CourseError, match=message):
        load_preferences(bad)


def test_validate_preferences_names_the_pair():
    ok = {"prompt": "P", "chosen": "a", "rejected": "b"}
    assert validate_preferences([ok]) == [ok]
    with pytest.raises(CourseError, match=r"pairs\[1\]: missing field 'chosen'"):
        validate_preferences([ok, {"prompt": "P", "rejected": "b"}])
    with pytest.raises(CourseError, match=r"train pairs\[0\]: empty prompt"):
        validate_preferences([{**ok, "prompt": "  "}], where="train pairs")
    with pytest.raises(CourseError, match="expected a list of records"):
        validate_preferences("prompt,chosen,rejected")
    with pytest.raises(CourseError, match="must be a JSON object"):
        validate_preferences([ok, ("P", "a", "b")])
    ds = preferences_dataset([{**ok, "_line": 3}])
    assert ds.column_names == ["prompt", "chosen", "rejected"] and len(ds) == 1
