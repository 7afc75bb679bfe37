"""train.dpo: the config (provenance, validation, unknown keys), a frozen and separate reference, training moves the
implicit reward the right way, the learning-rate schedule, the RPO term, samples that keep their token ids, KL 0 at the
start."""

import copy
import math

import pytest
import torch

from instruct_course.core import CourseError
from instruct_course.data.masking import format_prompt
from instruct_course.data.world import make_splits
from instruct_course.train.dpo import (
    DPO_CONFIG_PROVENANCE,
    DPOConfig,
    evaluate_policy,
    sample_logprobs,
    sample_responses,
    train_dpo,
)


def test_config_provenance_and_validation():
    from dataclasses import fields

    assert set(DPO_CONFIG_PROVENANCE) == {f.name for f in fields(DPOConfig)}
    assert DPOConfig().beta == 0.1 and DPOConfig.paper().learning_rate == 1e-6 and DPOConfig.paper().batch_size == 64
    for bad in (dict(beta=0), dict(optim="sgd"), dict(batch_size=0), dict(padding_side="middle")):
        with pytest.raises(CourseError):
            DPOConfig(**bad)


# --- training -------------------------------------------------------------------------------------------------------


def _params(m):
    return {n: p.detach().clone() for n, p in m.named_parameters()}


def test_reference_frozen_and_policy_learns(tok, tiny_sft, pairs):
    policy, ref = copy.deepcopy(tiny_sft), copy.deepcopy(tiny_sft)
    before = _params(ref)
    start = _params(policy)
    cfg = DPOConfig(max_steps=8, batch_size=8, learning_rate=1e-3, warmup_steps=1)
    policy, h = train_dpo(policy, ref, tok, pairs, cfg, progress=False)
    after = _params(ref)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the reference did not move
    assert all(not p.requires_grad for p in ref.parameters()) and not ref.training
    assert any(not torch.equal(start[k], v) for k, v in _params(policy).items())  # ...while the policy did
    assert h["loss"][0] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 0
    assert h["reward_accuracy"][-1] > 0.5 and h["margin"][-1] > 0 and h["loss"][-1] < math.log(2)
    assert (
        len(h["loss"]) == 8
        and h["skipped_steps"] == 0
        and set(h) >= {"chosen_reward", "rejected_reward", "lr", "grad_norm", "data"}
    )


def test_reference_must_be_separate(tok, tiny_sft, pairs):
    with pytest.raises(CourseError, match="separate"):
        train_dpo(tiny_sft, tiny_sft, tok, pairs, DPOConfig(max_steps=1), progress=False)
    with pytest.raises(CourseError, match="separate"):
        train_dpo(tiny_sft, None, tok, pairs, DPOConfig(max_steps=1), progress=False)


def test_precomputed_reference_equals_online_and_is_deterministic(tok, tiny_sft, pairs):
    cfg = dict(max_steps=3, batch_size=4, learning_rate=1e-3, warmup_steps=1)
    _, a = train_dpo(copy.deepcopy(tiny_sft), copy.deepcopy(tiny_sft), tok, pairs, DPOConfig(**cfg), progress=False)
    _, b = train_dpo(
        copy.deepcopy(tiny_sft),
        copy.deepcopy(tiny_sft),
        tok,
        pairs,
        DPOConfig(**cfg, precompute_ref_log_probs=False),
        progress=False,
    )
    _, c = train_dpo(copy.deepcopy(tiny_sft), copy.deepcopy(tiny_sft), tok, pairs, DPOConfig(**cfg), progress=False)
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-4) and a["loss"] == c["loss"]


# --- evaluation -----------------------------------------------------------------------------------------------------


def test_samples_keep_token_ids_and_kl_is_zero_at_start(tok, tiny_sft, tiny):
    recs = make_splits(
        seed=0, n_train=8, n_eval=3, families=["sentiment", "uppercase"], heldout_families=["uppercase"]
    )["heldout_instances"]
    prompts = [format_prompt(r["instruction"], r["input"]) for r in recs]
    s = sample_responses(tiny_sft, tok, prompts, n_samples=2, max_new_tokens=16, seed=0)
    assert len(s) == 2 * len(prompts) and all(x["response_ids"] for x in s)
    assert all(x["response_ids"][-1] == tok.eos_token_id for x in s if x["ended"])
    assert [x["text"] for x in s] == [
        x["text"] for x in sample_responses(tiny_sft, tok, prompts, n_samples=2, max_new_tokens=16, seed=0)
    ]
    lp = sample_logprobs(tiny_sft, s, tok)
    assert lp.shape == (len(s),) and (lp < 0).all()
    res = evaluate_policy(tiny_sft, copy.deepcopy(tiny_sft), tok, recs, n_samples=2, max_new_tokens=16)
    assert (
        res["kl"] == pytest.approx(0.0, abs=1e-4) and 0 <= res["gold_greedy"] <= 1 and res["n_samples"] == 2 * len(recs)
    )
    # a different model has a positive KL estimate
    other = evaluate_policy(tiny_sft, tiny, tok, recs, n_samples=2, max_new_tokens=16)
    assert other["kl"] > 0.5


def test_rpo_sft_term_added(tok, tiny_sft, pairs):
    cfg = DPOConfig(max_steps=1, batch_size=4, rpo_alpha=0.5)
    _, h = train_dpo(copy.deepcopy(tiny_sft), copy.deepcopy(tiny_sft), tok, pairs, cfg, progress=False)
    assert h["sft_loss"][0] > 0
    assert h["loss"][0] == pytest.approx(math.log(2) + 0.5 * h["sft_loss"][0], abs=1e-4)  # DPO part is log 2 at step 0
    with pytest.raises(CourseError, match="rpo_alpha"):
        DPOConfig(rpo_alpha=-1)


# --- the config: validated when built, TRL's names, unknown keys refused -------------------------------------------


@pytest.mark.parametrize(
    "bad, field",
    [
        (dict(beta=-0.1), "beta"),
        (dict(loss_type="ipo"), "loss_type"),
        (dict(label_smoothing=0.5), "label_smoothing"),
        (dict(rpo_alpha=-1.0), "rpo_alpha"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(max_grad_norm=float("nan")), "max_grad_norm"),
        (dict(weight_decay=-0.01), "weight_decay"),
        (dict(optim="adamw"), "optim"),  # the course's old value: TRL's name is adamw_torch
        (dict(batch_size=2.0), "batch_size"),
        (dict(max_steps=True), "max_steps"),
        (dict(max_length=0), "max_length"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(padding_side="middle"), "padding_side"),
    ],
)
def test_config_refuses_each_bad_value_naming_the_field(bad, field):
    with pytest.raises(CourseError, match=rf"DPOConfig\.{field}"):
        DPOConfig(**bad)


def test_config_accepts_the_edges_and_the_paper():
    cfg = DPOConfig(warmup_steps=0, label_smoothing=0.49, rpo_alpha=0.0, optim="rmsprop", padding_side="left")
    assert cfg.warmup_steps == 0 and cfg.optim == "rmsprop"
    paper = DPOConfig.paper()
    assert (paper.beta, paper.learning_rate, paper.batch_size, paper.warmup_steps, paper.optim) == (
        0.1,
        1e-6,
        64,
        150,
        "rmsprop",
    )
    assert DPOConfig.paper(beta=0.5).beta == 0.5


def test_config_overrides_refuse_unknown_keys(tok, tiny_sft, pairs):
    assert DPOConfig.from_overrides(beta=0.3, max_steps=2).max_steps == 2
    for old in ("sft_weight", "precompute_ref", "optimizer"):  # the course's former names, now TRL's
        with pytest.raises(CourseError, match=rf"unknown DPOConfig setting\(s\): '{old}'.*Valid: beta"):
            DPOConfig.from_overrides(**{old: 1})
    with pytest.raises(CourseError, match="rpo_alpha"):  # the message lists the valid names
        DPOConfig.from_overrides(sft_weight=1.0)
    with pytest.raises(CourseError, match="unknown DPOConfig setting"):
        DPOConfig.paper(learning_rat=1e-5)
    with pytest.raises(CourseError, match="unknown DPOConfig setting"):  # a dict config is checked the same way
        train_dpo(copy.deepcopy(tiny_sft), copy.deepcopy(tiny_sft), tok, pairs, {"max_step": 1}, progress=False)
    with pytest.raises(CourseError, match="must be a DPOConfig"):
        train_dpo(copy.deepcopy(tiny_sft), copy.deepcopy(tiny_sft), tok, pairs, [1], progress=False)


def test_learning_rate_warms_up_from_zero_then_stays(tok, tiny_sft, pairs):
    "transformers' get_constant_schedule_with_warmup: step k of the warmup runs at lr·k/warmup_steps."
    cfg = {"max_steps": 5, "batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 2}
    _, h = train_dpo(copy.deepcopy(tiny_sft), copy.deepcopy(tiny_sft), tok, pairs, cfg, progress=False)
    assert h["lr"] == pytest.approx([0.0, 5e-4, 1e-3, 1e-3, 1e-3])
    assert h["config"]["warmup_steps"] == 2 and h["loss"][1] == pytest.approx(math.log(2), abs=1e-4)  # lr 0: no move
    _, h0 = train_dpo(
        copy.deepcopy(tiny_sft), copy.deepcopy(tiny_sft), tok, pairs, {**cfg, "warmup_steps": 0}, progress=False
    )
    assert h0["lr"] == pytest.approx([1e-3] * 5)
