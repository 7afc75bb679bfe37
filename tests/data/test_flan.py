"""instruct_course.data.flan: templates, OPTIONS, zero/few-shot (the mixing is in test_flan_mixing.py)."""

import random

import pytest

from instruct_course.core import CourseError
from instruct_course.data.flan import (
    all_renderings,
    flan_task_templates,
    format_few_shot,
    format_options,
    format_zero_shot,
    record_identity,
    render_flan,
    template_fields,
    template_table,
)
from instruct_course.data.world import FAMILIES, instance_text, render_record
from instruct_course.data.world_tasks import TOPIC_LABELS

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
