"""data.multitask: the tutorial's formatting function fixed, single-task configs as data, a leak-free experiment split,
the diagnostics."""

from collections import Counter

import pytest

from instruct_course.core import CourseError
from instruct_course.data.flan_mixing import check_no_leak
from instruct_course.data.multitask import (
    DEFAULT_TRAIN_FAMILIES,
    DEFAULT_UNSEEN_FAMILIES,
    TUTORIAL_MULTI_TASK_SOURCES,
    WORLD_STAND_INS,
    answer_vocab,
    borrowed_family,
    borrowed_format_rate,
    format_multi_task_dataset,
    format_single_task,
    multitask_splits,
    single_task_configs,
    single_task_dataset,
    single_task_fields,
    world_task_datasets,
    world_task_formats,
)
from instruct_course.data.world import instance_text


def test_format_multi_task_dataset_shape_fields_and_mix():
    raw = world_task_datasets(["sentiment", "translate", "code"], n=6)
    recs = format_multi_task_dataset(raw, world_task_formats(raw), seed=0)
    assert len(recs) == 18 and Counter(r["task"] for r in recs) == {"sentiment": 6, "translate": 6, "code": 6}
    for r in recs:
        assert set(r) == {"instruction", "input", "response", "task", "template_id"}
        assert all(isinstance(r[k], str) for k in ("instruction", "input", "response"))
        instance_text(r)  # the wording really is the family's template (raises otherwise)
    assert [r["task"] for r in recs] != sorted(r["task"] for r in recs)  # shuffled
    assert recs == format_multi_task_dataset(raw, world_task_formats(raw), seed=0)  # deterministic
    grouped = format_multi_task_dataset(raw, world_task_formats(raw), seed=None)
    assert [r["task"] for r in grouped] == ["sentiment"] * 6 + ["translate"] * 6 + ["code"] * 6
    assert Counter(r["task"] for r in format_multi_task_dataset(raw, world_task_formats(raw), cap=2)) == {
        "sentiment": 2,
        "translate": 2,
        "code": 2,
    }


def test_format_multi_task_dataset_tutorial_tuple_and_list_input():
    fmt = lambda ex: (f"Rate: {ex['s']}", ex["y"])
    out = format_multi_task_dataset({"cls": [{"s": "good", "y": "positive"}]}, {"cls": fmt})
    assert out == [{"instruction": "Rate: good", "input": "", "response": "positive", "task": "cls"}]
    out3 = format_multi_task_dataset({"cls": {"train": [{"s": "a"}]}}, {"cls": lambda ex: ("Do", ex["s"], "b")})
    assert out3[0]["input"] == "a" and out3[0]["response"] == "b"


@pytest.mark.parametrize(
    "datasets, formats, kw, msg",
    [
        ({}, {}, {}, "non-empty dict"),
        ({"cls": [{"s": 1}]}, {}, {}, "no format function for task(s) ['cls']"),
        ({"cls": [{"s": 1}]}, {"cls": "not callable"}, {}, "must be a function"),
        ({"cls": {"train": [{"s": 1}]}}, {"cls": lambda e: ("a", "b")}, {"split": "test"}, "no split 'test'"),
        ({"cls": []}, {"cls": lambda e: ("a", "b")}, {}, "is empty"),
        ({"cls": [{"s": 1}]}, {"cls": lambda e: "just a string"}, {}, "task 'cls', example 0"),
        ({"cls": [{"s": 1}]}, {"cls": lambda e: ("a", 3)}, {}, "'response' must be a string"),
        ({"cls": [{"s": 1}]}, {"cls": lambda e: ("  ", "b")}, {}, "empty 'instruction'"),
        ({"cls": [{"s": 1}]}, {"cls": lambda e: ("a", "b")}, {"cap": 0}, "cap must be a positive int"),
    ],
)
def test_format_multi_task_dataset_bad_input(datasets, formats, kw, msg):
    with pytest.raises(CourseError, match=__import__("re").escape(msg)):
        format_multi_task_dataset(datasets, formats, **kw)


def test_tutorial_data_kept_verbatim_and_stand_ins_exist():
    assert (
        set(TUTORIAL_MULTI_TASK_SOURCES)
        == set(WORLD_STAND_INS)
        == {"classification", "summarization", "qa", "translation", "code"}
    )
    assert TUTORIAL_MULTI_TASK_SOURCES["summarization"] == ("cnn_dailymail", "3.0.0")
    assert (
        single_task_configs["legal"]["instruction_format"]
        == "Analyze the following legal clause: {clause}\nQuestion: {question}"
    )
    assert set(single_task_configs) == {"medical", "legal", "code"}


def test_single_task_formats_and_no_invented_domains():
    assert single_task_fields("medical") == ["symptoms", "diagnosis", "reasoning"]
    rec = format_single_task("medical", {"symptoms": "cough", "diagnosis": "cold", "reasoning": "mild"})
    assert rec == {
        "instruction": "Based on the patient's symptoms, provide a diagnosis: cough",
        "input": "",
        "response": "Diagnosis: cold\nReasoning: mild",
        "task": "medical",
    }
    code = single_task_dataset("code", n=4)
    assert len(code) == 4 and all(
        r["response"].startswith("```python\ndef ") and "Explanation:" in r["response"] for r in code
    )
    for dom in ("medical", "legal"):
        with pytest.raises(CourseError, match=f"no {dom} data"):
            single_task_dataset(dom)
    with pytest.raises(CourseError, match=r"missing field\(s\) \['reasoning'\]"):
        format_single_task("medical", {"symptoms": "x", "diagnosis": "y"})


def test_experiment_split_has_no_leak():
    d = multitask_splits(n_train=30, n_eval=3)
    train_fams = {r["task"] for r in d["train"]}
    assert train_fams == set(DEFAULT_TRAIN_FAMILIES) and {r["task"] for r in d["unseen"]} == set(
        DEFAULT_UNSEEN_FAMILIES
    )
    assert not train_fams & {r["task"] for r in d["unseen"]}
    assert check_no_leak(d["train"], DEFAULT_UNSEEN_FAMILIES) == len(d["train"])
    assert {r["task"] for r in d["seen_templates"]} == train_fams
    assert not {instance_text(r) for r in d["train"]} & {
        instance_text(r) for k in ("seen_instances", "seen_templates", "unseen") for r in d[k]
    }
    # the failure side: the leak check catches an unseen record slipped into training; an overlapping plan is refused
    with pytest.raises(CourseError, match="leaked"):
        check_no_leak(d["train"] + d["unseen"][:1], DEFAULT_UNSEEN_FAMILIES)
    with pytest.raises(CourseError, match="both in training and unseen"):
        multitask_splits(["sentiment", "plural"], ["plural", "topic"])
    with pytest.raises(CourseError, match="unknown task family"):
        multitask_splits(["sentiment"], ["nope"])


def test_borrowed_format():
    voc = answer_vocab(
        [
            {"task": "sentiment", "response": "positive"},
            {"task": "sentiment", "response": "negative"},
            {"task": "uppercase", "response": "RED CAT"},
        ]
    )
    assert borrowed_family("negative", voc) == "sentiment" and borrowed_family("CAT RED", voc) == "uppercase"
    assert borrowed_family("red cat", voc) is None and borrowed_family("", voc) is None
    preds = [
        {"prediction": "positive", "correct": False},
        {"prediction": "positive", "correct": True},
        {"prediction": "cats", "correct": False},
    ]
    assert borrowed_format_rate(preds, voc) == pytest.approx(1 / 3)
    with pytest.raises(CourseError):
        borrowed_format_rate([], voc)


def test_world_data_is_deterministic_per_seed():
    a, b = world_task_datasets(["code", "qa"], n=5, seed=1), world_task_datasets(["code", "qa"], n=5, seed=1)
    assert a == b != world_task_datasets(["code", "qa"], n=5, seed=2)
    assert single_task_dataset("code", n=5, seed=1) == single_task_dataset("code", n=5, seed=1)
    assert len({r["instruction"] for r in single_task_dataset("code", n=20)}) == 20  # distinct instances
    with pytest.raises(CourseError, match="unknown task family"):
        world_task_datasets(["nope"])
