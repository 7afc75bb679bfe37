"Pitfalls 1-6 of DESIGN.md: prefix/boundary, empty response, EOS with pad == eos, truncation, packing, accumulation."

import copy

import pytest
import torch

from instruct_course.core import CourseError
from instruct_course.data.masking import (
    IGNORE_INDEX,
    ExampleTooLong,
    InstructionCollator,
    collate_packed,
    compute_instruction_loss,
    decode_targets,
    format_prompt,
    pack_examples,
    prepare_dataset,
    prepare_instruction_data,
)
from instruct_course.models import load_model, load_tokenizer
from instruct_course.data.world import make_splits


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("tiny", device="cpu")


@pytest.fixture(scope="module")
def recs():
    return make_splits(seed=0, n_train=20, n_eval=2)["train"]


def tutorial_labels(instruction, response, tok):
    "The source tutorial's masking (tokenise the prompt separately): used to show the failure."
    full = tok(f"Instruction: {instruction}\nResponse: {response}", add_special_tokens=False)["input_ids"]
    n = len(tok(f"Instruction: {instruction}\nResponse:", add_special_tokens=False)["input_ids"])
    return [IGNORE_INDEX] * n + full[n:]


# 1. prompt tokens are a prefix / boundary merges
def test_boundary_merge_is_handled(tok):
    prompt = "Instruction: Is it good?\nResponse: "  # trailing space merges with the first response token
    full = tok(prompt + "positive", add_special_tokens=False)["input_ids"]
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    assert full[: len(p)] != p  # the tokenizer does merge across this boundary
    ex = prepare_instruction_data("Is it good?", "positive", tok)
    assert decode_targets(ex, tok) == " positive" + tok.eos_token


@pytest.mark.parametrize("style", ["tutorial", "alpaca", "chat"])
def test_trained_tokens_are_exactly_the_response(tok, recs, style):
    for r in recs[:50]:
        ex = prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"], style=style)
        tgt = decode_targets(ex, tok)
        assert tgt.removesuffix(tok.eos_token).removesuffix("<|im_end|>").strip() == r["response"].strip()
        first = next(i for i, l in enumerate(ex["labels"]) if l != IGNORE_INDEX)
        assert all(l != IGNORE_INDEX for l in ex["labels"][first:])  # one contiguous response block
        assert tok.decode(ex["input_ids"][:first]).startswith(
            format_prompt(r["instruction"], r["input"], style, tok)[:20]
        )


# 2. empty response raises
def test_empty_response_raises(tok):
    for bad in ["", "   ", "\n"]:
        with pytest.raises(CourseError, match="empty response"):
            prepare_instruction_data("Say hi.", bad, tok)
    with pytest.raises(CourseError, match="record 1"):
        prepare_dataset([{"instruction": "a", "response": "b"}, {"instruction": "c", "response": ""}], tok)


# 3. EOS inside the loss, also when pad == eos
def test_eos_is_trained_when_pad_is_eos(tok):
    t2 = copy.deepcopy(tok)
    t2.pad_token = t2.eos_token
    exs = [
        prepare_instruction_data("Say hi.", "hi", t2),
        prepare_instruction_data("Write hello in capitals.", "HELLO", t2),
    ]
    assert all(e["labels"][-1] == t2.eos_token_id for e in exs)
    b = InstructionCollator(t2)(exs)
    assert int((b["labels"] == t2.eos_token_id).sum()) == 2
    # the naive collator (mask every pad id) would drop them: the check can fail
    naive = b["input_ids"].clone()
    naive[naive == t2.pad_token_id] = IGNORE_INDEX
    assert int((naive == t2.eos_token_id).sum()) == 0


# 4. truncation keeps the response; never a fully masked example; fully masked batch is not NaN
def test_truncation_keeps_response(tok):
    long = "Read this carefully please. " * 80 + "Say hi."
    ex = prepare_instruction_data(long, "hi there", tok, max_length=40)
    assert len(ex["input_ids"]) == 40 and decode_targets(ex, tok) == " hi there" + tok.eos_token
    with pytest.raises(ExampleTooLong):
        prepare_instruction_data(long, "hi there", tok, max_length=40, truncation="drop")
    with pytest.raises(ExampleTooLong, match="response alone"):
        prepare_instruction_data("Say it.", "word " * 100, tok, max_length=40)


def test_prepare_dataset_counts_drops(tok, recs):
    ds, rep = prepare_dataset(recs, tok, max_length=24, verbose=False)
    assert rep["dropped_too_long"] > 0 and rep["kept"] == len(ds) and rep["kept"] + rep["dropped_too_long"] == len(recs)
    assert all(any(l != IGNORE_INDEX for l in e["labels"]) for e in ds)


def test_fully_masked_batch_is_zero_not_nan(tok, model):
    b = InstructionCollator(tok)([prepare_instruction_data("Say hi.", "hi", tok)])
    b["labels"][:] = IGNORE_INDEX
    with pytest.warns(UserWarning, match="no response tokens"):
        loss = compute_instruction_loss(model, b)
    assert torch.isfinite(loss) and loss.item() == 0.0
    # HF's own mean over zero tokens is NaN: what we guard against
    assert torch.isnan(model(**b).loss)


def test_loss_matches_hf_on_normal_batch(tok, model, recs):
    b = InstructionCollator(tok)(
        [prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"]) for r in recs[:6]]
    )
    assert torch.allclose(compute_instruction_loss(model, b), model(**b).loss, atol=1e-5)


# 5. packing: positions reset, no cross-attention, same logits and loss
def test_packing_equals_unpacked(tok, model, recs):
    exs = [prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"]) for r in recs[:6]]
    rows = pack_examples(exs, 400)
    assert len(rows) < len(exs)
    pb, ub = collate_packed(rows, tok), InstructionCollator(tok)(exs)
    assert pb["position_ids"][0, rows[0]["seq_lens"][0]] == 0  # positions restart for the second document
    with torch.no_grad():
        pl = model(
            input_ids=pb["input_ids"], attention_mask=pb["attention_mask"], position_ids=pb["position_ids"]
        ).logits
        ul = model(input_ids=ub["input_ids"], attention_mask=ub["attention_mask"]).logits
        k = 0
        for r_i, row in enumerate(rows):
            s = 0
            for n in row["seq_lens"]:
                assert torch.allclose(pl[r_i, s : s + n], ul[k, :n], atol=1e-4)
                s += n
                k += 1
        assert torch.allclose(compute_instruction_loss(model, pb), compute_instruction_loss(model, ub), atol=1e-5)
        # without the block mask (and with global positions) the second document changes: the test can fail
        leaky = model(input_ids=pb["input_ids"][:1]).logits
        n0, n1 = rows[0]["seq_lens"][:2]
        assert not torch.allclose(leaky[0, n0 : n0 + n1], ul[1, :n1], atol=1e-4)


# 6. normalisation over response tokens across gradient accumulation
def test_accumulation_normalisation(tok, model, recs):
    exs = [prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"]) for r in recs[:8]]
    col = InstructionCollator(tok)
    full, a, b = col(exs), col(exs[:2]), col(exs[2:])
    n = int((full["labels"][:, 1:] != IGNORE_INDEX).sum())

    def grad(fn):
        model.zero_grad()
        fn()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).clone()

    g_full = grad(lambda: compute_instruction_loss(model, full).backward())
    g_acc = grad(lambda: [compute_instruction_loss(model, m, num_items=n).backward() for m in (a, b)])
    g_naive = grad(lambda: [(compute_instruction_loss(model, m) / 2).backward() for m in (a, b)])
    model.zero_grad()
    assert torch.allclose(g_acc, g_full, atol=1e-6)
    assert not torch.allclose(g_naive, g_full, atol=1e-6)


def test_bad_input_messages(tok):
    with pytest.raises(CourseError, match="unknown prompt style"):
        prepare_instruction_data("a", "b", tok, style="markdown")
    with pytest.raises(CourseError, match="record 0: missing field 'response'"):
        prepare_dataset([{"instruction": "a"}], tok)
    with pytest.raises(CourseError, match="must be a string"):
        prepare_instruction_data("a", 3, tok)
