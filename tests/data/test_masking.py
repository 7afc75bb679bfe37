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
    masked_lm_loss,
    pack_examples,
    packed_attention_mask,
    pad_sequences,
    pad_token_id,
    position_ids_from_mask,
    prepare_dataset,
    prepare_instruction_data,
    show_mask,
)


@pytest.fixture(scope="module")
def recs(splits):
    "About 20 training records per family (the shared world splits, seed 0)."
    return splits["train"][:220]


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
        first = next(i for i, lab in enumerate(ex["labels"]) if lab != IGNORE_INDEX)
        assert all(lab != IGNORE_INDEX for lab in ex["labels"][first:])  # one contiguous response block
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
    assert all(any(lab != IGNORE_INDEX for lab in e["labels"]) for e in ds)


def test_fully_masked_batch_is_zero_not_nan(tok, tiny):
    b = InstructionCollator(tok)([prepare_instruction_data("Say hi.", "hi", tok)])
    b["labels"][:] = IGNORE_INDEX
    with pytest.warns(UserWarning, match="no response tokens"):
        loss = compute_instruction_loss(tiny, b)
    assert torch.isfinite(loss) and loss.item() == 0.0
    # HF's own mean over zero tokens is NaN: what we guard against
    assert torch.isnan(tiny(**b).loss)


def test_loss_matches_hf_on_normal_batch(tok, tiny, recs):
    b = InstructionCollator(tok)(
        [prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"]) for r in recs[:6]]
    )
    assert torch.allclose(compute_instruction_loss(tiny, b), tiny(**b).loss, atol=1e-5)


# 5. packing: positions reset, no cross-attention, same logits and loss
def test_packing_equals_unpacked(tok, tiny, recs):
    exs = [prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"]) for r in recs[:6]]
    rows = pack_examples(exs, 400)
    assert len(rows) < len(exs)
    pb, ub = collate_packed(rows, tok), InstructionCollator(tok)(exs)
    assert pb["position_ids"][0, rows[0]["seq_lens"][0]] == 0  # positions restart for the second document
    with torch.no_grad():
        pl = tiny(
            input_ids=pb["input_ids"], attention_mask=pb["attention_mask"], position_ids=pb["position_ids"]
        ).logits
        ul = tiny(input_ids=ub["input_ids"], attention_mask=ub["attention_mask"]).logits
        k = 0
        for r_i, row in enumerate(rows):
            s = 0
            for n in row["seq_lens"]:
                assert torch.allclose(pl[r_i, s : s + n], ul[k, :n], atol=1e-4)
                s += n
                k += 1
        assert torch.allclose(compute_instruction_loss(tiny, pb), compute_instruction_loss(tiny, ub), atol=1e-5)
        # without the block mask (and with global positions) the second document changes: the test can fail
        leaky = tiny(input_ids=pb["input_ids"][:1]).logits
        n0, n1 = rows[0]["seq_lens"][:2]
        assert not torch.allclose(leaky[0, n0 : n0 + n1], ul[1, :n1], atol=1e-4)


# 6. normalisation over response tokens across gradient accumulation
def test_accumulation_normalisation(tok, tiny, recs):
    exs = [prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"]) for r in recs[:8]]
    col = InstructionCollator(tok)
    full, a, b = col(exs), col(exs[:2]), col(exs[2:])
    n = int((full["labels"][:, 1:] != IGNORE_INDEX).sum())

    def grad(fn):
        tiny.zero_grad()
        fn()
        return torch.cat([p.grad.flatten() for p in tiny.parameters() if p.grad is not None]).clone()

    g_full = grad(lambda: compute_instruction_loss(tiny, full).backward())
    g_acc = grad(lambda: [compute_instruction_loss(tiny, m, num_items=n).backward() for m in (a, b)])
    g_naive = grad(lambda: [(compute_instruction_loss(tiny, m) / 2).backward() for m in (a, b)])
    tiny.zero_grad()
    assert torch.allclose(g_acc, g_full, atol=1e-6)
    assert not torch.allclose(g_naive, g_full, atol=1e-6)


def test_bad_input_messages(tok):
    with pytest.raises(CourseError, match="unknown prompt style"):
        prepare_instruction_data("a", "b", tok, style="markdown")
    with pytest.raises(CourseError, match="record 0: missing field 'response'"):
        prepare_dataset([{"instruction": "a"}], tok)
    with pytest.raises(CourseError, match="must be a string"):
        prepare_instruction_data("a", 3, tok)


# the shared padding helper, the collator's options, and packing without a pad token


def test_pad_sequences_sides_length_and_errors():
    assert pad_sequences([[5, 6, 7], [8]], 0).tolist() == [[5, 6, 7], [8, 0, 0]]
    assert pad_sequences([torch.tensor([5, 6]), [8]], -1, side="left").tolist() == [[5, 6], [-1, 8]]
    out = pad_sequences([[1]], IGNORE_INDEX, length=3)
    assert out.dtype == torch.long and out.tolist() == [[1, IGNORE_INDEX, IGNORE_INDEX]]
    with pytest.raises(CourseError, match="padding side"):
        pad_sequences([[1]], 0, side="middle")
    with pytest.raises(CourseError, match="does not fit"):
        pad_sequences([[1, 2, 3]], 0, length=2)
    with pytest.raises(CourseError, match="empty"):
        pad_sequences([], 0)


def test_pad_token_id_falls_back_to_eos(tok):
    assert pad_token_id(tok) == tok.pad_token_id
    t2 = copy.deepcopy(tok)
    t2.pad_token = None
    assert t2.pad_token_id is None and pad_token_id(t2) == t2.eos_token_id


def test_collator_left_padding_and_multiple_of(tok):
    exs = [
        prepare_instruction_data("Say hi.", "hi", tok),
        prepare_instruction_data("Write hello in capitals.", "HELLO", tok),
    ]
    b = InstructionCollator(tok, pad_to_multiple_of=8, padding_side="left")(exs)
    assert b["input_ids"].shape[1] % 8 == 0
    assert (b["attention_mask"][:, -1] == 1).all() and (b["labels"][b["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert (b["input_ids"][b["attention_mask"] == 0] == tok.pad_token_id).all()
    with pytest.raises(CourseError, match="empty batch"):
        InstructionCollator(tok)([])


def test_masked_lm_loss_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]]))
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])  # position 0 predicts 1 (p=.5), position 1 predicts 0 (p=.25)
    expected = -(torch.tensor(0.5).log() + torch.tensor(0.25).log()) / 2
    assert torch.allclose(masked_lm_loss(logits, labels), expected)
    assert torch.allclose(masked_lm_loss(logits, labels, num_items=4), expected / 2)


def test_position_ids_and_packed_mask():
    am = torch.tensor([[0, 0, 1, 1], [1, 1, 0, 0]])
    assert position_ids_from_mask(am).tolist() == [[0, 0, 0, 1], [0, 1, 1, 1]]
    m = packed_attention_mask([[2, 1], [3]], 4)
    assert m.shape == (2, 1, 4, 4)
    allowed = (m == 0).int()
    assert allowed[0, 0].tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert allowed[1, 0].tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]]


def test_collate_packed_pads_and_works_without_pad_token(tok, recs):
    exs = [prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"]) for r in recs[:5]]
    rows = pack_examples(exs, 200)
    t2 = copy.deepcopy(tok)
    t2.pad_token = None  # GPT-2 style: no pad token; padding uses EOS
    b = collate_packed(rows, t2)
    n = max(len(r["input_ids"]) for r in rows)
    assert b["input_ids"].shape == b["labels"].shape == b["position_ids"].shape == (len(rows), n)
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        assert b["input_ids"][i, k:].eq(t2.eos_token_id).all() and b["labels"][i, k:].eq(IGNORE_INDEX).all()
        assert b["position_ids"][i, :k].tolist() == r["position_ids"]
    with pytest.raises(CourseError, match="max_length"):
        pack_examples(exs, 5)


def test_show_mask_brackets_the_trained_tokens(tok):
    ex = prepare_instruction_data("Say hi.", "hi", tok)
    assert show_mask(ex, tok, as_html=False) == "Instruction: Say hi.\nResponse:[ h][i][" + tok.eos_token + "]"
    assert "background" in show_mask(ex, tok).data


# special-token strings typed in user text (issue 14), max_length and empty datasets


@pytest.fixture(scope="module")
def smol():
    from instruct_course.models import load_tokenizer

    return load_tokenizer("smollm2")


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
@pytest.mark.parametrize("style", ["tutorial", "alpaca"])
def test_typed_special_tokens_stay_text(tok, smol, which, style):
    t = tok if which == "tiny" else smol
    response = f"Type {t.eos_token} to stop, or <|im_start|>."
    ex = prepare_instruction_data(f"Explain {t.eos_token}.", response, t, input="<|endoftext|>", style=style)
    specials = {i for i, a in t.added_tokens_decoder.items() if a.special}
    assert not specials & set(ex["input_ids"][:-1]) and ex["labels"][-1] == t.eos_token_id  # one EOS, at the end
    assert decode_targets(ex, t) == " " + response + t.eos_token


@pytest.mark.parametrize("field", ["instruction", "input", "response"])
def test_typed_special_tokens_are_refused_in_chat_style(tok, field):
    texts = {"instruction": "Say hi.", "input": "", "response": "hi", field: "a <|im_end|> b"}
    with pytest.raises(CourseError, match=f"the {field} contains '<\\|im_end\\|>'.*style='tutorial'"):
        prepare_instruction_data(texts["instruction"], texts["response"], tok, input=texts["input"], style="chat")


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_ordinary_text_tokenises_exactly_as_without_split_special_tokens(tok, smol, recs, which):
    "split_special_tokens=True changes nothing for text without special-token strings: no lesson number moves."
    t = tok if which == "tiny" else smol
    for r in recs[::7]:
        for style in ("tutorial", "alpaca"):
            full = format_prompt(r["instruction"], r["input"], style) + " " + r["response"].strip()
            ex = prepare_instruction_data(r["instruction"], r["response"], t, input=r["input"], style=style)
            assert ex["input_ids"][:-1] == t(full, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("bad", [0, -1, 2.5, 512.0, "512", True, None])
def test_max_length_must_be_a_positive_int(tok, bad):
    with pytest.raises(CourseError, match=f"max_length must be a positive whole number.*got {bad!r}"):
        prepare_instruction_data("Say hi.", "hi", tok, max_length=bad)
    with pytest.raises(CourseError, match="max_length must be a positive whole number"):
        prepare_dataset([{"instruction": "Say hi.", "response": "hi"}], tok, max_length=bad)


def test_empty_datasets_say_empty(tok):
    for empty in ([], (), iter([])):
        with pytest.raises(CourseError, match="the dataset is empty"):
            prepare_dataset(empty, tok)
    with pytest.raises(CourseError, match="all 1 examples are longer than max_length=3"):
        prepare_dataset([{"instruction": "Say hi.", "response": "hello there friend"}], tok, max_length=3)
    with pytest.raises(CourseError, match="records must be a list of dicts"):
        prepare_dataset({"instruction": "a", "response": "b"}, tok)
