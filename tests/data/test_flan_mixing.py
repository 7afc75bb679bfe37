"""instruct_course.data.flan_mixing: capped mixing (DESIGN pitfall 12), the leak guard, upsampling and pretraining
text mixed into SFT."""

import random
from collections import Counter

import pytest

from instruct_course.core import CourseError
from instruct_course.data.flan_mixing import (
    check_no_leak,
    mix_pretraining,
    mix_tasks,
    mixing_weights,
    upsample_tasks,
)
from instruct_course.data.masking import IGNORE_INDEX
from instruct_course.data.world import pretraining_text


@pytest.fixture(scope="module")
def by_task(splits):
    d = {}
    for r in splits["train"]:
        d.setdefault(r["task"], []).append(r)
    return d


# ---- mixing: DESIGN pitfall 12 ---------------------------------------------------------------------------------


def test_cap_applies_before_weights():
    w = mixing_weights({"a": 10_000, "b": 1_000}, cap=3000)
    assert w == {"a": 0.75, "b": 0.25}  # capping afterwards would leave b at 1/11 or 364/3364
    assert w["b"] != pytest.approx(1 / 11) and w["b"] != pytest.approx(364 / 3364)
    assert mixing_weights({"a": 10_000, "b": 1_000}, cap=None) == {"a": 10 / 11, "b": 1 / 11}
    assert mixing_weights({"a": 500, "b": 1_500}) == {"a": 0.25, "b": 0.75}
    assert mixing_weights({"a": 9_000, "b": 50_000, "c": 3_000}) == {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    assert mixing_weights({"a": 10, "b": 0}) == {"a": 1.0, "b": 0.0}


@pytest.mark.parametrize(
    "sizes,cap",
    [
        ({}, 3000),
        ({"a": -1}, 3000),
        ({"a": 1.5}, 3000),
        ({"a": True}, 3000),
        ({"a": 0, "b": 0}, 3000),
        ({"a": 5}, 0),
        ({"a": 5}, -3),
        ({"a": 5}, 2.5),
        ([("a", 5)], 3000),
    ],
)
def test_mixing_weights_rejects(sizes, cap):
    with pytest.raises(CourseError):
        mixing_weights(sizes, cap=cap)


def _fake(task, n):
    return [{"instruction": f"{task} {i}", "input": "", "response": str(i), "task": task} for i in range(n)]


def test_mix_tasks_counts_follow_capped_weights():
    data = {"a": _fake("a", 10_000), "b": _fake("b", 1_000)}
    mix = mix_tasks(data, n=4000, cap=3000, seed=0)
    assert len(mix) == 4000 and mix.counts == {"a": 3000, "b": 1000}  # the buggy way gives a: 3000, b: 364
    assert Counter(r["task"] for r in mix) == Counter({"a": 3000, "b": 1000})
    assert mix.repeats == {"a": 0, "b": 0} and mix.weights == {"a": 0.75, "b": 0.25}
    assert "total" in mix.report()


def test_mix_tasks_deterministic_exact_and_repeats_counted():
    data = {"a": _fake("a", 50), "b": _fake("b", 7), "c": _fake("c", 20)}
    m1, m2 = mix_tasks(data, n=101, cap=20, seed=3), mix_tasks(data, n=101, cap=20, seed=3)
    assert m1 == m2 and m1 != mix_tasks(data, n=101, cap=20, seed=4)
    assert sum(m1.counts.values()) == len(m1) == 101
    assert m1.counts == {"a": 43, "b": 15, "c": 43}  # 101 * (20, 7, 20) / 47, largest remainder
    assert m1.repeats == {"a": 0, "b": 15 - 7, "c": 43 - 20}
    uses = Counter(r["instruction"] for r in m1 if r["task"] == "c")  # whole shuffled passes: 43 = 20 + 20 + 3
    assert len(uses) == 20 and set(uses.values()) == {2, 3}


def test_mix_tasks_samples_beyond_cap_from_whole_task():
    data = {"a": _fake("a", 1000), "b": _fake("b", 1000)}
    mix = mix_tasks(data, n=500, cap=100, seed=0)
    assert mix.counts == {"a": 250, "b": 250} and mix.repeats == {"a": 0, "b": 0}


def test_mix_tasks_adds_task_and_copies():
    data = {"x": [{"instruction": "i", "input": "", "response": "r"}]}
    mix = mix_tasks(data, n=2, cap=None)
    assert [r["task"] for r in mix] == ["x", "x"] and "task" not in data["x"][0]


@pytest.mark.parametrize(
    "data,n",
    [
        ({}, 5),
        ({"a": "abc"}, 5),
        ({"a": [1, 2]}, 5),
        ({"a": _fake("a", 3)}, 0),
        ({"a": _fake("a", 3)}, 2.5),
        ({"a": []}, 5),
    ],
)
def test_mix_tasks_rejects(data, n):
    with pytest.raises(CourseError):
        mix_tasks(data, n=n)


# ---- held-out families never leak ------------------------------------------------------------------------------


def test_world_mixture_has_no_leak(by_task):
    mix = mix_tasks(by_task, n=600, cap=50, seed=0, heldout_families=["antonym", "compare"])
    assert check_no_leak(mix, ["antonym", "compare"]) == 600
    assert not {r["task"] for r in mix} & {"antonym", "compare"}


def test_check_no_leak_names_offending_record(splits, by_task):
    mix = list(mix_tasks(by_task, n=300, cap=50, seed=0))
    leaked = splits["heldout_families"][0]
    mix.insert(123, leaked)
    with pytest.raises(CourseError, match=r"train_records\[123\].*" + leaked["task"]):
        check_no_leak(mix, ["antonym", "compare"])
    with pytest.raises(CourseError, match="held-out families"):
        mix_tasks({**by_task, "compare": splits["heldout_families"][:3]}, n=50, heldout_families=["antonym", "compare"])


def test_check_no_leak_templates_and_bad_input(splits):
    tr = list(splits["train"][:20])
    held = splits["heldout_templates"][0]
    with pytest.raises(CourseError, match=r"train_records\[20\].*template"):
        check_no_leak(tr + [held], ["antonym"], heldout_templates=[held["template_id"]])
    assert check_no_leak(tr + [held], ["antonym"]) == 21  # template ids only checked when given
    with pytest.raises(CourseError, match="list of family names"):
        check_no_leak(tr, "antonym")
    with pytest.raises(CourseError, match=r"train_records\[1\] has no 'task'"):
        check_no_leak([tr[0], {"instruction": "x"}], ["antonym"])


# ---- upsampling and pretraining text (moved here from train.sft and train.callbacks) ----------------------------


def test_upsample_tasks_counts_order_and_errors(splits):
    recs = splits["train"]
    up = upsample_tasks(recs, {"qa": 6, "summarize": 6})
    n0, n1 = Counter(r["task"] for r in recs), Counter(r["task"] for r in up)
    assert all(n1[t] == n0[t] * (6 if t in ("qa", "summarize") else 1) for t in n0)
    assert up == upsample_tasks(recs, {"qa": 6, "summarize": 6}) != upsample_tasks(recs, {"qa": 6, "summarize": 6}, 1)
    # the same order as before the move: the records once, then the copies, shuffled once with random.Random(seed)
    expected = list(recs) + [r for k in range(5) for r in recs if r["task"] in ("qa", "summarize")]
    random.Random(0).shuffle(expected)
    assert up == expected
    assert sorted(map(str, upsample_tasks(recs[:5], {}))) == sorted(map(str, recs[:5]))  # no factors: a shuffle
    with pytest.raises(CourseError, match="summarize"):
        upsample_tasks(recs, {"summarise": 2})  # the message lists the tasks present
    with pytest.raises(CourseError, match="integer >= 1"):
        upsample_tasks(recs, {"qa": 0})


def test_mix_pretraining_really_inserts_text(tok, splits):
    recs = splits["train"][:70]
    docs = pretraining_text(seed=5, n_docs=50)
    ds = mix_pretraining(recs, docs, tok, ratio=0.3, doc_tokens=64)
    assert Counter(ds["source"]) == {"sft": 70, "pretrain": 30}
    pre = [r for r in ds if r["source"] == "pretrain"]
    sft = [r for r in ds if r["source"] == "sft"]
    assert all(
        IGNORE_INDEX not in r["labels"] and r["labels"] == r["input_ids"] and len(r["input_ids"]) <= 64 for r in pre
    )
    assert all(r["input_ids"][-1] == tok.eos_token_id for r in pre)
    assert all(IGNORE_INDEX in r["labels"] for r in sft)
    doc_texts = {tok.decode(r["input_ids"][:-1]) for r in pre}
    assert any(t and any(d.startswith(t[:30]) for d in docs) for t in doc_texts)  # the rows are the documents' text
    assert Counter(mix_pretraining(recs, [], tok, ratio=0.0)["source"]) == {"sft": 70}
    assert mix_pretraining(recs, docs, tok, seed=3).to_list() == mix_pretraining(recs, docs, tok, seed=3).to_list()
    short = mix_pretraining(recs[:10], docs, tok, ratio=0.5, max_length=40, doc_tokens=64)
    assert max(len(r["input_ids"]) for r in short if r["source"] == "pretrain") <= 40  # documents fit max_length too
    with pytest.raises(CourseError, match="needs pretraining documents"):
        mix_pretraining(recs, [], tok, ratio=0.5)
    with pytest.raises(CourseError, match="ratio"):
        mix_pretraining(recs, docs, tok, ratio=1.0)
    with pytest.raises(CourseError, match=r"docs\[1\]"):
        mix_pretraining(recs, ["a story.", {"text": "not a string"}], tok, ratio=0.5)
    with pytest.raises(CourseError, match="no SFT records"):
        mix_pretraining([], docs, tok)
