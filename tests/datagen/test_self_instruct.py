"""Self-Instruct: filters, ROUGE-L, seed loading, config, growing pool and resume (a scripted generator stands in for
the LM; no model is loaded)."""

import random
import re

import pytest

from instruct_course.core import CourseError
from instruct_course.datagen.filters import (
    REASONS,
    candidate_record,
    finish_instance,
    instruction_reason,
    leading_verb,
    load_seed_tasks,
    parse_instance,
    quality_report,
    response_reason,
    seed_records,
    tutorial_is_valid,
)
from instruct_course.datagen.self_instruct import (
    SelfInstructConfig,
    SelfInstructGenerator,
    as_text_generator,
    instruction_prompt,
    make_config,
    read_complete_batches,
    rule_is_classification,
)
from instruct_course.metrics import UnicodeTokenizer, rouge_l


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
            '{"instruction": "Say hi.", "input": "", "output": "hi", "is_classification": false}\n'
            '{"instruction": "say hi.", "input": "", "output": "yo", "is_classification": false}\n',
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
    "Stands in for TextGenerator: instruction prompts get a proposal chosen by the call's seed; instances an answer."

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
    with pytest.raises(CourseError, match="classify"):  # refused when the config is made, before any generation
        SelfInstructGenerator(None, None, load_seed_tasks(), config=SelfInstructConfig(classify="magic"))
    g = SelfInstructGenerator(None, None, load_seed_tasks(), classify="lm", progress=False)
    with pytest.raises(CourseError, match="no model"):  # asking the model needs one
        g.is_classification(["Name a colour."])


# ---------------------------------------------------------------- config and helpers
@pytest.mark.parametrize(
    "bad,field",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(n_human=1.5), "n_human"),
        (dict(n_machine=-1), "n_machine"),
        (dict(seed=True), "seed"),
        (dict(min_words=5, max_words=4), "max_words"),
        (dict(rouge_threshold=0.0), "rouge_threshold"),
        (dict(rouge_threshold=1.5), "rouge_threshold"),
        (dict(top_p=0.0), "top_p"),
        (dict(temperature=-0.1), "temperature"),
        (dict(classify="magic"), "classify"),
    ],
)
def test_config_validates_itself(bad, field):
    with pytest.raises(CourseError, match=field):
        SelfInstructConfig(**bad)


def test_config_defaults_and_overrides():
    c = SelfInstructConfig()
    assert (c.n_human, c.n_machine, c.rouge_threshold, c.max_words, c.temperature) == (6, 2, 0.7, 150, 0.7)  # paper
    assert make_config(SelfInstructConfig, c, batch_size=4).batch_size == 4 and c.batch_size == 16
    assert make_config(SelfInstructConfig, {"seed": 3}).seed == 3
    with pytest.raises(
        CourseError, match=r"unknown SelfInstructConfig setting\(s\): 'batchsize' \(did you mean 'batch_size'\?\)"
    ):
        make_config(SelfInstructConfig, batchsize=4)
    with pytest.raises(CourseError, match="temprature"):
        SelfInstructGenerator(None, None, load_seed_tasks(), temprature=0.5)
    g = SelfInstructGenerator(None, None, load_seed_tasks(), batch_size=4, seed=9)
    assert (g.cfg.batch_size, g.cfg.seed, g.sampling["batch_size"]) == (4, 9, 4)


def test_seed_records_and_bad_seeds():
    recs = seed_records(["Write a poem.", {"instruction": "  Name a river. ", "is_classification": True}])
    assert recs[1] == {"instruction": "Name a river.", "input": "", "output": "", "is_classification": True}
    assert len(seed_records()) == len(load_seed_tasks())
    for bad, msg in [
        ([], "empty"),
        ([{"input": "x"}], r"seed_tasks\[0\]: missing field 'instruction'"),
        (["  "], "empty"),
    ]:
        with pytest.raises(CourseError, match=msg):
            seed_records(bad)
    with pytest.raises(CourseError, match=r"seed_tasks\[1\]: field 'instruction' must be a string"):
        seed_records(["ok", {"instruction": 3}])


def test_instruction_prompt_fills_with_seeds():
    seeds = seed_records()
    p, shown = instruction_prompt(seeds, [], 6, 2, random.Random(0))
    assert len(shown) == 8 and len(set(shown)) == 8 and p.endswith("Task 9:")
    machine = [{"instruction": "Machine task one."}, {"instruction": "Machine task two."}]
    _, shown = instruction_prompt(seeds, machine, 6, 2, random.Random(0))
    assert {"Machine task one.", "Machine task two."} <= set(shown)


def test_candidate_and_instance_records():
    r = candidate_record(2, 1, 4, {"text": " Name a river. ", "finish_reason": "stop"}, ["x"], None, 0.41234, "y")
    assert (r["id"], r["status"], r["rouge_nearest"], r["instruction"]) == ("b2-1", "pending", 0.4123, "Name a river.")
    ok = finish_instance(dict(r), False, {"text": "<none>\nOutput: The Nile.", "finish_reason": "stop"})
    assert (ok["status"], ok["output"], ok["input"]) == ("accepted", "The Nile.", "")
    assert finish_instance(dict(r), False, {"text": "The Nile", "finish_reason": "stop"})["reason"] == "unparseable"
    assert finish_instance(dict(r), False, {"text": "x", "finish_reason": "length"})["reason"] == "truncated_response"
    copied = finish_instance(dict(r), False, {"text": "<none>\nOutput: Name a river.", "finish_reason": "stop"})
    assert copied["reason"] == "copied_response"


def test_read_complete_batches(tmp_path):
    assert read_complete_batches(tmp_path / "missing.jsonl") == []
    p = tmp_path / "g.jsonl"
    p.write_text('{"batch": 0, "batch_n": 1}\n{"batch": 1, "batch_n": 2}\n')  # batch 1 half written
    assert read_complete_batches(p) == [{"batch": 0, "batch_n": 1}] and len(p.read_text().splitlines()) == 1


def test_as_text_generator_needs_a_tokenizer(tiny):
    assert as_text_generator(None) is None
    with pytest.raises(CourseError, match="needs its tokenizer"):
        as_text_generator(tiny)
