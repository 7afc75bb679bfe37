"""train.ppo_rollout: log-probs at the sampling temperature, position ids past left padding, the reward model's
inputs, a tokenizer mismatch refused, the policy loader, and the gold-reward evaluation."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from instruct_course.core import CourseError, seed_everything
from instruct_course.data.masking import format_prompt
from instruct_course.train.ppo_losses import logprobs_from_logits
from instruct_course.train.ppo_rollout import (
    PolicyWithValueHead,
    check_same_tokenizer,
    gold_eval,
    load_policy,
    response_logprobs,
    rollout,
    score_rollout,
    sequence_kl,
)


def test_logprobs_at_sampling_temperature(tiny_sft, tok, records):
    lm = tiny_sft
    prompts = [format_prompt(r["instruction"], r["input"]) for r in records[:6]]
    T = 1.6  # far from 1, so the T=1 bug is large enough to see on this confident model
    seed_everything(0)
    ro = rollout(lm, tok, prompts, max_new_tokens=12, temperature=T)
    seed_everything(0)
    g = lm.generate(
        input_ids=ro["query"],
        attention_mask=ro["query_mask"],
        do_sample=True,
        temperature=T,
        top_k=0,
        top_p=1.0,
        max_new_tokens=12,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        output_scores=True,
        return_dict_in_generate=True,
    )
    n = len(g.scores)
    assert torch.equal(
        g.sequences[:, ro["query"].shape[1] :][:, :n][ro["response_mask"][:, :n].bool()],
        ro["response"][:, :n][ro["response_mask"][:, :n].bool()],
    )
    sampled = (
        torch.stack([F.log_softmax(s, -1) for s in g.scores], 1).gather(-1, ro["response"][:, :n, None]).squeeze(-1)
    )
    m = ro["response_mask"][:, :n].bool()
    lp, _, _ = response_logprobs(lm, ro["query"], ro["query_mask"], ro["response"], ro["response_mask"], temperature=T)
    assert torch.allclose(lp[:, :n][m], sampled[m], atol=1e-4)
    lp1, _, _ = response_logprobs(
        lm, ro["query"], ro["query_mask"], ro["response"], ro["response_mask"], temperature=1.0
    )
    assert (lp1[:, :n][m] - sampled[m]).abs().max() > 1e-2  # the bug (log-probs at T=1) is detected


def test_position_ids_skip_left_padding_for_absolute_positions(tok, records, repad):
    """RoPE (the tiny Llama) is shift-invariant; GPT-2's learned positions are not: our forward pass must number
    positions past the padding."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok),
            n_positions=256,
            n_embd=32,
            n_layer=2,
            n_head=2,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    ).eval()
    prompts = [format_prompt(r["instruction"], r["input"]) for r in records[:4]]
    ro = rollout(gpt, tok, prompts, max_new_tokens=6, temperature=1.0)
    ro2 = repad(ro, tok.pad_token_id, left=5, right=2)
    R = ro["response"].shape[1]
    m = ro["response_mask"].bool()
    with torch.no_grad():
        a, _, _ = response_logprobs(gpt, ro["query"], ro["query_mask"], ro["response"], ro["response_mask"])
        b, _, _ = response_logprobs(gpt, ro2["query"], ro2["query_mask"], ro2["response"], ro2["response_mask"])
        assert torch.allclose(a[m], b[:, :R][m], atol=1e-5)
        ids = torch.cat([ro2["query"], ro2["response"]], 1)
        am = torch.cat([ro2["query_mask"], ro2["response_mask"]], 1)
        naive = logprobs_from_logits(
            gpt(input_ids=ids, attention_mask=am).logits[:, ro2["query"].shape[1] - 1 : -1], ro2["response"]
        )[:, :R]
    assert (naive[m] - a[m]).abs().max() > 1e-3  # failure side: positions counted from 0 through the padding


def test_rm_scores_a_rollout_as_its_unpadded_rows(tiny_sft, tok, tiny_rm, records):
    "Prompt padding removed, right padding added: each row scores as it would alone (the RM reads the last real token)."
    rm, _ = tiny_rm
    seed_everything(0)
    ro = rollout(tiny_sft, tok, [format_prompt(r["instruction"], r["input"]) for r in records[:5]], 12, 1.0)
    batched = score_rollout(rm, ro, records[:5], tok.pad_token_id)
    alone = []
    for i in range(5):
        q = ro["query"][i][ro["query_mask"][i].bool()]
        r = ro["response"][i][ro["response_mask"][i].bool()]
        ids = torch.cat([q, r])[None]
        with torch.no_grad():
            s = rm(ids, torch.ones_like(ids))
        alone.append(float(getattr(s, "rewards", s).reshape(-1)[0]))
    assert torch.allclose(batched, torch.tensor(alone), atol=1e-4)
    # a text-level function gets the decoded responses; anything else is refused
    assert score_rollout(lambda recs, texts: [len(t) for t in texts], ro, records[:5], 0).tolist() == [
        float(len(t)) for t in ro["texts"]
    ]
    with pytest.raises(CourseError, match="reward_model must be"):
        score_rollout("tiny-rm", ro, records[:5], 0)


def test_tokenizer_check(tok, splits):
    from instruct_course.models import train_tokenizer

    other = train_tokenizer([r["instruction"] + " " + r["response"] for r in splits["train"][:200]], vocab_size=300)
    with pytest.raises(CourseError, match="different tokenizers"):
        check_same_tokenizer(tok, other)
    check_same_tokenizer(tok, tok)  # same tokenizer: accepted

    class SmallVocabRM(torch.nn.Module):
        config = type("Cfg", (), {"vocab_size": 10})()

    with pytest.raises(CourseError, match="different tokenizers"):
        check_same_tokenizer(tok, reward_model=SmallVocabRM())


def test_load_policy_takes_a_name_or_a_model(tiny_sft, tok):
    lm, t = load_policy("tiny-sft")
    assert t.eos_token_id == tok.eos_token_id and next(lm.parameters()).dtype == torch.float32
    assert load_policy(tiny_sft, tok)[0] is tiny_sft
    with pytest.raises(CourseError, match="no tokenizer"):
        load_policy(tiny_sft)
    with pytest.raises(CourseError, match="model name or a causal LM"):
        load_policy(None)
    with pytest.raises(CourseError, match="tiny-sft"):  # a misspelt shipped name: the resolver suggests the right one
        load_policy("tiny-stf")


def test_value_head_starts_at_zero(tiny_sft, tok, records):
    ro = rollout(tiny_sft, tok, [format_prompt(r["instruction"], r["input"]) for r in records[:3]], 8, 1.0)
    model = PolicyWithValueHead(tiny_sft).eval()
    lp, _, v = response_logprobs(
        model, ro["query"], ro["query_mask"], ro["response"], ro["response_mask"], with_values=True
    )
    assert v.shape == lp.shape and v.abs().sum() == 0


def test_gold_eval_against_itself_and_bad_records(tiny_sft, tok, splits):
    recs = splits["heldout_instances"][:6]
    res = gold_eval(tiny_sft, tok, recs, ref_model=copy.deepcopy(tiny_sft), max_new_tokens=16, rm=None)
    assert res["n"] == 6 and 0 <= res["gold"] <= 1 and res["rm"] is None
    assert res["kl"] == pytest.approx(0.0, abs=1e-4)
    assert math.isclose(sequence_kl(tiny_sft, copy.deepcopy(tiny_sft), tok, recs, max_new_tokens=16), 0.0, abs_tol=1e-4)
    assert gold_eval(tiny_sft, tok, recs, max_new_tokens=16)["kl"] is None  # no reference: no KL
    with pytest.raises(CourseError, match=r"records\[1\]: missing field 'instruction'"):
        gold_eval(tiny_sft, tok, [recs[0], {"input": "x"}])
    with pytest.raises(CourseError, match="empty"):
        gold_eval(tiny_sft, tok, [])
