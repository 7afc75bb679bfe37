"""Property-based tests (hypothesis) for the parts of the course that take free text (issue 14):

- `prepare_instruction_data` on any Unicode instruction, input and response (special-token strings mixed in), with
  both shipped tokenizers (tiny, and SmolLM2's, whose pad token is its EOS), tiny with pad == eos too, every prompt
  style and any `max_length`: either the trained tokens decode to exactly the stripped response plus the end of turn
  and EOS (after the style's separator), with no special token anywhere in the user's text and never a fully masked
  example, or a counted refusal (`ExampleTooLong`, or a `CourseError` for a blank text or a special token in chat
  style). Text a tokenizer cannot represent (SmolLM2's vocabulary, converted from GGUF, lacks a few control bytes)
  decodes to what the response alone decodes to, and is counted;
- `write_jsonl` then `read_jsonl` gives back the same records;
- `metrics.rouge_l` and `metrics.token_f1` are symmetric and in [0, 1] (1 for a text with itself);
- `expand_rankings` gives C(K, 2) pairs minus ties, the chosen response always scored higher.

Examples are derandomized (the same ones every run) and few enough that the file runs in well under a minute."""

import collections
import copy
import functools
import itertools
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instruct_course.core import CourseError, read_jsonl, write_jsonl
from instruct_course.data.masking import (
    IGNORE_INDEX,
    ExampleTooLong,
    InstructionCollator,
    prepare_instruction_data,
    special_token_strings,
)
from instruct_course.data.preferences import expand_rankings
from instruct_course.metrics import rouge_l, token_f1
from instruct_course.models import load_tokenizer

PROP = settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=100, deadline=None, derandomize=True)
COUNTS = collections.Counter()  # what the masking property saw: accepted examples and refusals by kind


@functools.cache
def tokenizer(name: str):
    "tiny, tiny with pad == eos, or SmolLM2's tokenizer (pad == eos already); each loaded once per session."
    if name == "tiny-pad-eos":
        t = copy.deepcopy(tokenizer("tiny"))
        t.pad_token = t.eos_token
        return t
    return load_tokenizer(name)


SPECIAL = ["<|endoftext|>", "<|im_end|>", "<|im_start|>", "<|pad|>", "<repo_name>"]
pieces = st.one_of(st.text(max_size=12), st.sampled_from(SPECIAL + [" ", "\n", "Response:", "###", "  x "]))
free_text = st.lists(pieces, max_size=5).map("".join)  # any Unicode, special-token strings and template words mixed in
solid = st.text(min_size=1, max_size=6).filter(str.strip)
filled = st.builds(lambda a, b, c: a + b + c, free_text, solid, free_text)
blank = st.sampled_from(["", " ", "\n\t "])
some_text = st.builds(lambda k, f, b: b if k == 0 else f, st.integers(0, 9), filled, blank)  # blank one time in ten


def check_example(ex, tok, instruction, inp, response, style, max_length):
    ids, labels = ex["input_ids"], ex["labels"]
    assert len(ids) == len(labels) == len(ex["attention_mask"]) <= max_length
    trained = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
    assert trained, "a fully masked example"
    assert trained == list(range(trained[0], len(labels))), "the trained tokens are not one block at the end"
    assert all(labels[i] == ids[i] for i in trained)
    tail = ("<|im_end|>" if style == "chat" else "") + tok.eos_token
    sep = "" if style == "chat" else " "
    text = tok.decode([ids[i] for i in trained], clean_up_tokenization_spaces=False)
    exact = sep + response.strip()
    alone = tok(exact, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    if tok.decode(alone, clean_up_tokenization_spaces=False) != exact:  # SmolLM2's GGUF vocabulary lacks a few bytes
        COUNTS["text the tokenizer cannot represent"] += 1  # (U+0004, U+0006, U+0013, U+0014, U+0016, U+001D, ...)
        exact = tok.decode(alone, clean_up_tokenization_spaces=False)
    assert text == exact + tail, (text, response)
    n_tail = len(tok(tail, add_special_tokens=False)["input_ids"])
    specials = {i for i, t in tok.added_tokens_decoder.items() if t.special}
    user_part = [ids[i] for i in trained][:-n_tail] if style == "chat" else ids[:-1]  # chat: the template has its own
    assert not specials & set(user_part), "a special token inside the user's text"
    assert ids[-1] == tok.eos_token_id


@PROP
@given(
    name=st.sampled_from(["tiny", "tiny-pad-eos", "smollm2"]),
    style=st.sampled_from(["tutorial", "alpaca", "chat"]),
    instruction=some_text,
    inp=free_text,
    response=some_text,
    max_length=st.integers(1, 160),
    truncation=st.sampled_from(["left", "drop"]),
)
def test_prepare_instruction_data_trains_exactly_the_response_or_refuses(
    name, style, instruction, inp, response, max_length, truncation
):
    tok = tokenizer(name)
    try:
        ex = prepare_instruction_data(instruction, response, tok, max_length, inp, style, truncation)
    except ExampleTooLong:
        COUNTS["refused: too long"] += 1
        return
    except CourseError as e:
        typed = style == "chat" and any(
            s in t for s in special_token_strings(tok) for t in (instruction, inp, response)
        )
        blank = not response.strip() or not instruction.strip()
        assert typed or blank, e  # the only other refusals: a blank text, a special token typed in chat style
        COUNTS["refused: special token in chat" if typed and not blank else "refused: blank text"] += 1
        return
    COUNTS["accepted"] += 1
    check_example(ex, tok, instruction, inp, response, style, max_length)
    batch = InstructionCollator(tok)([ex, prepare_instruction_data("Say hi.", "hi", tok, style="tutorial")])
    row = batch["labels"][0, : len(ex["labels"])].tolist()
    assert row == ex["labels"] and row[-1] == tok.eos_token_id  # the collator keeps EOS, even when pad == eos


def test_the_masking_property_saw_every_outcome():
    "The property above ran on examples of every kind (run after it; skipped when it was deselected)."
    if not COUNTS:
        pytest.skip("the masking property did not run")
    print(dict(COUNTS))
    assert COUNTS["accepted"] >= 100 and COUNTS["refused: too long"] > 0 and COUNTS["refused: blank text"] > 0


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@FEW
@given(st.lists(st.dictionaries(st.text(max_size=10), json_value, max_size=4), max_size=6))
def test_jsonl_round_trip(records):
    with tempfile.TemporaryDirectory() as d:
        path = write_jsonl(records, Path(d) / "r.jsonl")
        assert read_jsonl(path) == records
        assert sorted(p.name for p in Path(d).iterdir()) == ["r.jsonl"]  # no temporary file left


words = st.lists(
    st.sampled_from("the a cat Cat dog sat on mat 42 le chat 猫 ça !".split()) | st.text(max_size=6), max_size=8
).map(" ".join)


@FEW
@given(words, words)
def test_rouge_l_and_token_f1_are_symmetric_and_bounded(a, b):
    for f in (rouge_l, token_f1):
        ab, ba = f(a, b), f(b, a)
        assert 0.0 <= ab <= 1.0 and math.isclose(ab, ba, abs_tol=1e-12), (f.__name__, a, b, ab, ba)
        assert f(a, a) == 1.0


@FEW
@given(st.lists(st.tuples(st.text(min_size=1, max_size=4), st.integers(-3, 3)), min_size=2, max_size=6))
def test_expand_rankings_pairs(items):
    responses = [r for r, _ in items]
    scores = [s for _, s in items]
    try:
        pairs, stats = expand_rankings([{"prompt": "P", "responses": responses, "scores": scores}])
    except CourseError as e:
        assert "no pairs" in str(e)
        return
    ties = sum(
        scores[i] == scores[j] or responses[i].strip() == responses[j].strip()
        for i, j in itertools.combinations(range(len(items)), 2)
    )
    assert stats["pairs"] == len(pairs) == math.comb(len(items), 2) - ties and stats["ties_dropped"] == ties
    assert all(p["gold_chosen"] > p["gold_rejected"] and p["chosen"] != p["rejected"] for p in pairs)
