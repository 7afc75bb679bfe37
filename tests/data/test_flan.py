"""instruct_course.data.flan: templates, OPTIONS, zero/few-shot, capped mixing (DESIGN pitfall 12), leak guard,
upsampling and pretraining text mixed into SFT."""

import random
from collections import Counter

import pytest

from instruct_course.core import CourseError
from instruct_course.data.flan import (
    all_renderings,
    check_no_leak,
    flan_task_templates,
    format_few_shot,
    format_options,
    format_zero_shot,
    mix_pretraining,
    mix_tasks,
    mixing_weights,
    record_identity,
    render_flan,
    template_fields,
    template_table,
    upsample_tasks,
)
from instruct_course.data.masking import IGNORE_INDEX
from instruct_course.data.world import FAMILIES, TOPIC_LABELS, instance_text, pretraining_text, render_record


@pytest.fixture(scope="module")
def by_task(splits):
    d = {}
    for r in splits["train"]:
        d.setdefault(r["task"], []).append(r)
    return d


# ---- templates -------------------------------------------------------------------------------------------------


def test_tutorial_templates_verbatim():
    assert list(flan_task_templates) == [
        "sentiment",
        "summarization",
        "question_answering",
        "translation",
        "classification",
        "reasoning",
    ]
    assert flan_task_templates["question_answering"] == (
        "Based on the following passage, answer the question.\nPassage: {passage}\nQuestion: {input}\nAnswer:"
    )
    assert flan_task_templates["classification"] == (
        "Classify the following text into one of these categories: {labels}\nText: {input}\nCategory:"
    )


def test_template_table_covers_both_sources():
    rows = template_table()
    assert sum(r["source"] == "tutorial" for r in rows) == 6
    world = [r for r in rows if r["source"] == "world"]
    for fam in FAMILIES:
        mine = [r for r in world if r["task"] == fam]
        assert sum(not r["heldout"] for r in mine) >= 3 and sum(r["heldout"] for r in mine) >= 1


def test_render_flan_by_name_and_world_id():
    assert (
        render_flan("sentiment", input="Great soup.")
        == "Is the following review positive or negative? Review: Great soup.\nAnswer:"
    )
    inst = FAMILIES["qa"].make(random.Random(0))
    rec = render_record("qa", inst, "qa_read")
    assert render_flan("qa_read", **inst) == rec["instruction"] + "\n" + rec["input"]
    assert render_flan("Say {x}.", x=3) == "Say 3."


def test_render_flan_missing_field_names_field_and_template():
    with pytest.raises(CourseError, match=r"question_answering.*'passage'"):
        render_flan("question_answering", input="Who?")
    with pytest.raises(CourseError, match="unknown template"):
        render_flan("no_such_template", input="x")
    with pytest.raises(CourseError, match="format_options"):
        render_flan("classification", labels=["a", "b"], input="x")
    with pytest.raises(CourseError):
        template_fields("broken {")


def test_several_templates_one_instance():
    inst = FAMILIES["sentiment"].make(random.Random(1))
    rows = all_renderings("sentiment", inst)
    assert len({r["prompt"] for r in rows}) == len(rows) >= 4
    assert {r["response"] for r in rows} == {inst["response"]} and [r["heldout"] for r in rows][-1] is True


# ---- OPTIONS ---------------------------------------------------------------------------------------------------


def test_format_options_flan_style():
    assert format_options(["a", "b"]) == "OPTIONS:\n- a\n- b"
    inst = FAMILIES["topic"].make(random.Random(2))
    assert format_options(TOPIC_LABELS) in render_flan("topic_opts", **inst)


@pytest.mark.parametrize("bad", ["a, b", ["only"], ["a", "a"], ["a", " "], ["a", "b\nc"], [1, 2], None])
def test_format_options_rejects(bad):
    with pytest.raises(CourseError):
        format_options(bad)


# ---- zero- and few-shot ----------------------------------------------------------------------------------------


def test_zero_shot(splits):
    r = splits["heldout_instances"][0]
    z = format_zero_shot(r)
    assert (
        z["prompt"].startswith(r["instruction"])
        and z["prompt"].endswith("\nAnswer:")
        and z["response"] == r["response"]
        and z["n_shots"] == 0
    )
    with pytest.raises(CourseError, match="'response'"):
        format_zero_shot({"instruction": "x", "input": ""})


def test_few_shot_deterministic_same_task_never_query(splits):
    pool = splits["train"]
    q = next(r for r in splits["heldout_templates"] if r["task"] == "sentiment")
    a = format_few_shot(q, pool, k=3, seed=0)
    assert a == format_few_shot(q, pool, k=3, seed=0)
    assert a["n_shots"] == 3 and len(set(a["exemplars"])) == 3 and record_identity(q) not in a["exemplars"]
    assert a["prompt"].count("\nAnswer:") == 4 and a["prompt"].endswith(format_zero_shot(q)["prompt"])
    ids = {record_identity(r): r for r in pool}
    assert all(ids[e]["task"] == "sentiment" for e in a["exemplars"])
    assert any(format_few_shot(q, pool, k=3, seed=s)["exemplars"] != a["exemplars"] for s in range(1, 6))
    assert format_few_shot(q, pool, k=0)["prompt"] == format_zero_shot(q)["prompt"]


def test_few_shot_excludes_query_instance_under_other_template():
    fam = FAMILIES["translate"]
    inst = fam.make(random.Random(7))
    q = render_record(fam, inst, "tr_heldout")
    same = [
        render_record(fam, inst, t.id) for t in fam.templates
    ]  # the query's instance, other phrasings, exact duplicate too
    others = [render_record(fam, fam.make(random.Random(s)), "tr_flan") for s in range(100, 103)]
    pool = same + [q] + others
    for s in range(30):
        fs = format_few_shot(q, pool, k=3, seed=s)
        assert instance_text(q) not in fs["exemplars"]
        assert inst["response"] not in fs["prompt"].rsplit("\n\n", 1)[0]
    with pytest.raises(CourseError, match="3 usable exemplars"):
        format_few_shot(q, pool, k=4)


def test_few_shot_errors(splits):
    q = splits["train"][0]
    with pytest.raises(CourseError, match="k must be"):
        format_few_shot(q, splits["train"], k=-1)
    with pytest.raises(CourseError, match=r"pool\[1\]"):
        format_few_shot(q, [splits["train"][1], {"instruction": "x"}], k=1)
    with pytest.raises(CourseError, match="pool must be a list"):
        format_few_shot(q, "not a pool", k=1)


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
