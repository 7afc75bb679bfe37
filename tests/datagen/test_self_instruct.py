"Self-Instruct: filters, ROUGE-L, seed loading, growing pool and resume (a scripted generator stands in for the LM; no model is loaded)."

import random
import re

import pytest

from instruct_course.core import CourseError
from instruct_course.datagen.self_instruct import (
    REASONS,
    SelfInstructConfig,
    SelfInstructGenerator,
    UnicodeTokenizer,
    instruction_reason,
    leading_verb,
    load_seed_tasks,
    parse_instance,
    quality_report,
    response_reason,
    rouge_l,
    tutorial_is_valid,
)


def test_shipped_seeds_are_valid_and_varied():
    seeds = load_seed_tasks()
    assert len(seeds) >= 100
    assert 20 <= sum(s["is_classification"] for s in seeds) <= 60
    assert len({leading_verb(s["instruction"]) for s in seeds}) >= 30
    assert all(instruction_reason(s["instruction"]) is None for s in seeds)


@pytest.mark.parametrize(
    "text,line",
    [
        ("", None),
        ('{"instruction": "Say hi.", "input": "", "output": "hi", "is_classification": false}\n{bad json}\n', 2),
        ('{"instruction": "Say hi.", "input": "", "output": "hi"}\n', 1),
        ('{"instruction": "Say hi.", "input": "", "output": "hi", "is_classification": "yes"}\n', 1),
        ('\n{"instruction": "  ", "input": "", "output": "hi", "is_classification": false}\n', 2),
        (
            '{"instruction": "Say hi.", "input": "", "output": "hi", "is_classification": false}\n{"instruction": "say hi.", "input": "", "output": "yo", "is_classification": false}\n',
            2,
        ),
    ],
)
def test_bad_seed_files_name_the_line(tmp_path, text, line):
    p = tmp_path / "seeds.jsonl"
    p.write_text(text)
    with pytest.raises(CourseError) as e:
        load_seed_tasks(p)
    msg = str(e.value)
    assert str(p) in msg
    if line:
        assert f":{line}:" in msg
    else:
        assert "empty" in msg


@pytest.mark.parametrize(
    "text,reason",
    [
        ("Write a haiku about autumn.", None),
        ("Summarise the user profile.", None),  # 'file' inside 'profile' is not the word 'file'
        ("Explain data mapping briefly.", None),  # 'map' inside 'mapping'
        ("Describe the plotline of Hamlet.", None),  # 'plot' inside 'plotline'
        ("Draw a cat in ASCII art.", "blacklist"),
        ("Open the FILE and count lines.", "blacklist"),
        ("Please go to the shop now.", "blacklist"),
        ("Make a flowchart of sign-up.", "blacklist"),
        ("Write poem.", "length"),
        ("Write a poem.", None),
        (" ".join(["word"] * 150), None),
        (" ".join(["word"] * 151), "length"),
        ("(Write) a poem about cats.", "punctuation_start"),
        ("Ça va? Write a poem.", "non_ascii_start"),
    ],
)
def test_instruction_filters(text, reason):
    assert instruction_reason(text) == reason


def test_truncated_and_response_filters():
    assert instruction_reason("Write a haiku about autumn.", "length") == "truncated_instruction"
    assert response_reason("Name a colour.", "blue", "length") == "truncated_response"
    assert response_reason("Name a colour.", "") == "empty_response"
    assert response_reason("Name a colour.", "?!") == "empty_response"
    assert response_reason("Name a colour.", "NAME a colour") == "copied_response"
    assert response_reason("Is it positive or negative?", "negative") is None
    assert response_reason("Sort the numbers.", "1, 2, 3") is None


def test_tutorial_filter_rejects_good_answers():
    assert not tutorial_is_valid("Write a function that adds two numbers.", "def add(a, b):\n    return a + b")
    assert not tutorial_is_valid("Sort the numbers from smallest to largest.", "3, 7, 19, 21, 42, 88")


def test_rouge_l_unicode():
    assert rouge_l("Переведите это предложение", "Переведите это предложение") == 1.0
    assert rouge_l("Переведите это предложение", "Опишите эту картину") == 0.0
    assert rouge_l("日本語の文を翻訳", "日本語の文を翻訳") == 1.0
    assert rouge_l("café au lait", "cafe au lait") < 1.0  # accents are kept, not stripped to 'caf'
    assert rouge_l("Write a poem about the sea.", "write a POEM about the sea") == 1.0
    assert rouge_l("!!", "!!") == 1.0 and rouge_l("!!", "??") == 0.0
    assert UnicodeTokenizer().tokenize("Hello_world, ÉTÉ 2024") == ["hello", "world", "été", "2024"]


def test_parse_instance():
    assert parse_instance("spam\nInput: Win now", True) == {"input": "Win now", "output": "spam"}
    assert parse_instance("no input marker", True) is None
    assert parse_instance("<none>\nOutput: Paris.", False) == {"input": "", "output": "Paris."}
    assert parse_instance("5, 3\nOutput: 3, 5\nTask: x", False) == {"input": "5, 3", "output": "3, 5"}
    assert parse_instance("missing output", False) is None


class ScriptedGen:
    "Stands in for TextGenerator: instruction prompts get a proposal chosen by the call's seed; instance prompts get an answer."

    PROPOSALS = [
        "Compose a limerick about a sleepy cat on a warm windowsill.",
        "Compose a limerick about a sleepy cat on a warm windowsill.",
        "Draw a map of your town.",
        "List three uses of baking soda in cleaning.",
        "Explain how tides work in simple words.",
        "Name a colour.",
        "Write a haiku about the first snow of winter.",
        "Describe your favourite season and why you like it.",
    ]

    def __init__(self, fail_on_call=None):
        self.calls, self.fail_on_call = 0, fail_on_call

    def __call__(self, prompts, seed=None, **kw):
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise KeyboardInterrupt("simulated crash")
        rng = random.Random(seed)
        out = []
        for p in prompts:
            if re.search(r"Task \d+:$", p):
                k = rng.randrange(len(self.PROPOSALS))
                t = self.PROPOSALS[k] + (f" Use {rng.randrange(1000)} words." if k in (3, 4, 7) else "")
                out.append(
                    {"text": t, "finish_reason": "length" if k == 5 and rng.random() < 0.5 else "stop", "new_tokens": 8}
                )
            else:
                out.append(
                    {"text": "<none>\nOutput: An answer of several words.", "finish_reason": "stop", "new_tokens": 8}
                )
        return out


def scripted(fail_on_call=None, batch_size=4):
    g = SelfInstructGenerator(
        None, None, load_seed_tasks(), config=SelfInstructConfig(batch_size=batch_size, seed=3), progress=False
    )
    g.gen = ScriptedGen(fail_on_call)
    g.is_classification = lambda instructions, seed=0: [False] * len(instructions)
    return g


def test_growing_pool_rejects_within_batch_duplicates():
    g = scripted()
    g.generate_instructions(num_instructions=24)
    seen_ok = []
    for r in g.records:
        if r["status"] == "accepted":
            assert all(rouge_l(r["instruction"], s) <= 0.7 for s in seen_ok)
            seen_ok.append(r["instruction"])
    limericks = [
        r for r in g.records if r["instruction"] == "Compose a limerick about a sleepy cat on a warm windowsill."
    ]
    assert len(limericks) >= 2
    assert sum(r["status"] == "accepted" for r in limericks) == 1  # the first is accepted, later copies are 'similar'
    assert all(r["reason"] == "similar" and r["nearest"] == limericks[0]["instruction"] for r in limericks[1:])
    assert any(r["reason"] == "blacklist" for r in g.records)
    assert any(
        r["reason"] == "similar"
        and r["instruction"] == "Write a haiku about the first snow of winter."
        and r["rouge_nearest"] == 1.0
        for r in g.records
    )  # a seed copy
    assert all(r["reason"] in REASONS for r in g.records if r["status"] == "rejected")
    assert g._is_valid("Compose a sonnet about rivers and bridges.", "A sonnet of fourteen lines.")
    assert not g._is_valid("Give three tips for staying healthy.", "Eat well, sleep, move.")  # similar to a seed


def test_resume_after_crash_is_exact(tmp_path):
    full = tmp_path / "full.jsonl"
    part = tmp_path / "part.jsonl"
    scripted().generate_instructions(num_instructions=20, out_path=full)
    g = scripted(fail_on_call=6)  # 2 calls per batch: dies inside batch 2 (the third)
    with pytest.raises(KeyboardInterrupt):
        g.generate_instructions(num_instructions=20, out_path=part)
    lines = part.read_text().splitlines()
    assert len(lines) == 8
    part.write_text("\n".join(lines) + "\n" + full.read_text().splitlines()[8][:30])  # plus a torn, half-written line
    scripted().generate_instructions(num_instructions=20, out_path=part)
    assert part.read_text() == full.read_text()
    again = scripted()
    again.gen = ScriptedGen(fail_on_call=1)  # a finished run makes no model calls
    again.generate_instructions(num_instructions=20, out_path=part)
    assert part.read_text() == full.read_text()


def test_corrupt_middle_line_is_an_error(tmp_path):
    p = tmp_path / "g.jsonl"
    scripted().generate_instructions(num_instructions=8, out_path=p)
    lines = p.read_text().splitlines()
    lines[2] = "{oops"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(CourseError, match=":3:"):
        scripted().generate_instructions(num_instructions=8, out_path=p)


def test_quality_report_counts():
    g = scripted()
    g.generate_instructions(num_instructions=16)
    rep = quality_report(g.records)
    assert rep["candidates"] == 16 and rep["accepted"] + sum(rep["rejected_by_reason"].values()) == 16
    assert rep["rejected_by_reason"]["similar"] == sum(r["reason"] == "similar" for r in g.records)
    assert sum(rep["rouge_nearest"]["counts"]) == len(rep["rouge_nearest"]["values"])
    assert rep["leading_verbs"]["distinct"] == len(
        {leading_verb(r["instruction"]) for r in g.records if r["status"] == "accepted"}
    )
    with pytest.raises(CourseError):
        quality_report([])
    with pytest.raises(CourseError):
        g.generate_instructions(num_instructions=0)


def test_classification_rule_and_option():
    from instruct_course.datagen.self_instruct import rule_is_classification

    for t in [
        "Classify the review as positive or negative.",
        "Decide whether the email is spam.",
        "Is the statement true or false?",
        "Is the number 7 prime?",
        "Tell whether the word is a noun or a verb.",
    ]:
        assert rule_is_classification(t), t
    for t in [
        "Write a story about a dragon.",
        "List three rivers.",
        "Explain how a fridge works.",
        "Translate the sentence into French.",
    ]:
        assert not rule_is_classification(t), t
    g = SelfInstructGenerator(
        None, None, load_seed_tasks(), config=SelfInstructConfig(classify="magic"), progress=False
    )
    with pytest.raises(CourseError, match="classify"):
        g.is_classification(["Name a colour."])
