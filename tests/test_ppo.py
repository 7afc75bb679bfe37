"PPO: GAE by hand, masked whitening, log-probs at the sampling temperature, each loss term by hand, padding invariance, KL controller, bad input."

import math

import pytest
import torch
import torch.nn.functional as F

from instruct_course.core import CourseError, seed_everything
from instruct_course.data.masking import format_prompt
from instruct_course.train.ppo import (
    AdaptiveKLController,
    FixedKLController,
    PolicyWithValueHead,
    PPOConfig,
    check_same_tokenizer,
    compute_gae,
    kl_penalty,
    load_policy,
    logprobs_from_logits,
    make_experience,
    masked_mean,
    masked_whiten,
    per_token_rewards,
    policy_loss,
    ppo_loss,
    response_logprobs,
    rollout,
    train_ppo,
    value_loss,
)
from instruct_course.data.world import make_splits


@pytest.fixture(scope="module")
def policy():
    return load_policy("tiny-sft")


@pytest.fixture(scope="module")
def records():
    return make_splits(seed=0)["train"][:12]


def test_gae_matches_hand_computation():
    # gamma 0.9, lambda 0.8; the 4th position is padding (its reward 7 and value 3 must not leak back)
    rew = torch.tensor([[0.0, -0.1, 1.0, 7.0]])
    val = torch.tensor([[0.2, 0.4, 0.5, 3.0]])
    m = torch.tensor([[1, 1, 1, 0]])
    adv, ret = compute_gae(rew, val, m, gamma=0.9, lam=0.8)
    # t=2: d=1-0.5=0.5, A=0.5; t=1: d=-0.1+0.9*0.5-0.4=-0.05, A=-0.05+0.72*0.5=0.31; t=0: d=0+0.9*0.4-0.2=0.16, A=0.16+0.72*0.31=0.3832
    assert torch.allclose(adv, torch.tensor([[0.3832, 0.31, 0.5, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0.5832, 0.71, 1.0, 0.0]]), atol=1e-6)
    # failure side: treating the padding as real changes the answer
    adv_bad, _ = compute_gae(rew, val, torch.ones_like(m), gamma=0.9, lam=0.8)
    assert not torch.allclose(adv_bad[:, :3], adv[:, :3])


def test_gae_lambda_one_gamma_one_is_reward_to_go_minus_value():
    rew = torch.tensor([[0.1, 0.2, 0.3]])
    val = torch.tensor([[0.5, 0.5, 0.5]])
    m = torch.ones(1, 3)
    adv, ret = compute_gae(rew, val, m, gamma=1.0, lam=1.0)
    assert torch.allclose(ret, torch.tensor([[0.6, 0.5, 0.3]]), atol=1e-6)
    assert torch.allclose(adv, ret - val, atol=1e-6)


def test_masked_whitening_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 99.0], [4.0, 5.0, -7.0, -7.0]])
    m = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    real = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    w = masked_whiten(x, m)
    assert torch.allclose(w[m.bool()], (real - real.mean()) / real.std(), atol=1e-5)
    assert w[~m.bool()].abs().sum() == 0
    # the padding values do not matter
    x2 = x.clone()
    x2[~m.bool()] = 1e6
    assert torch.allclose(masked_whiten(x2, m), w)
    # failure side: whitening everything (padding included) gives different real entries
    plain = (x - x.mean()) / x.std()
    assert not torch.allclose(plain[m.bool()], w[m.bool()], atol=1e-2)
    assert masked_mean(torch.tensor([1.0, 100.0]), torch.tensor([1, 0])).item() == 1.0


def test_logprobs_at_sampling_temperature(policy, records):
    lm, tok = policy
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
    # hand check of the formula
    logits = torch.tensor([[[2.0, 1.0, 0.0]]])
    assert math.isclose(
        logprobs_from_logits(logits, torch.tensor([[0]]), 0.5).item(),
        math.log(torch.softmax(logits / 0.5, -1)[0, 0, 0].item()),
        rel_tol=1e-6,
    )


def test_kl_estimators_and_rewards_by_hand():
    lp, rlp = torch.tensor([[-1.0, -2.0, -0.5]]), torch.tensor([[-1.5, -1.0, -0.5]])
    assert torch.allclose(kl_penalty(lp, rlp, "k1"), torch.tensor([[0.5, -1.0, 0.0]]))
    k3 = kl_penalty(lp, rlp, "k3")
    assert torch.allclose(k3, torch.tensor([[math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0, 0.0]]), atol=1e-6)
    with pytest.raises(CourseError, match="k1"):
        kl_penalty(lp, rlp, "k2")
    # score on the last real token (EOS), -beta*KL everywhere real, nothing on padding
    r = per_token_rewards(
        torch.tensor([2.0, -1.0]),
        torch.tensor([[0.5, -1.0, 0.3], [0.2, 0.4, 9.0]]),
        torch.tensor([[1, 1, 1], [1, 1, 0]]),
        beta=0.1,
    )
    assert torch.allclose(r, torch.tensor([[-0.05, 0.1, -0.03 + 2.0], [-0.02, -0.04 - 1.0, 0.0]]), atol=1e-6)


def test_policy_loss_by_hand():
    logp = torch.tensor([[0.5, -0.1, 3.0]])
    old = torch.zeros(1, 3)
    A = torch.tensor([[1.0, -2.0, 100.0]])
    m = torch.tensor([[1, 1, 0]])
    loss, st = policy_loss(logp, old, A, m, 0.2)
    # token 1: ratio e^0.5 clipped at 1.2 -> -1.2 ; token 2: ratio e^-0.1 inside -> 2 e^-0.1 ; padding ignored
    assert math.isclose(loss.item(), (-1.2 + 2 * math.exp(-0.1)) / 2, rel_tol=1e-5)
    assert st["clip_frac"] == 0.5
    # negative advantage with ratio below 1-eps: the clipped (larger) loss applies
    loss2, st2 = policy_loss(
        torch.tensor([[math.log(0.5)]]), torch.zeros(1, 1), torch.tensor([[-1.0]]), torch.ones(1, 1), 0.2
    )
    assert math.isclose(loss2.item(), 0.8, rel_tol=1e-6) and st2["clip_frac"] == 1.0
    # gradient only through the unclipped token
    lp = logp.clone().requires_grad_(True)
    policy_loss(lp, old, A, m, 0.2)[0].backward()
    assert lp.grad[0, 0] == 0 and lp.grad[0, 1] != 0 and lp.grad[0, 2] == 0


def test_value_loss_by_hand():
    m = torch.tensor([[1, 1, 0]])
    vl, st = value_loss(torch.tensor([[0.5, -0.1, 9.0]]), torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]]), m, 0.2)
    # token 1: (0.5-1)^2=0.25 vs clipped (0.2-1)^2=0.64 -> 0.64 ; token 2: 0.01 vs 0.01 -> 0.01
    assert math.isclose(vl.item(), 0.5 * (0.64 + 0.01) / 2, rel_tol=1e-6)
    assert st["vf_clip_frac"] == 0.5
    vl_wide, _ = value_loss(
        torch.tensor([[0.5, -0.1, 9.0]]), torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]]), m, 10.0
    )
    assert math.isclose(vl_wide.item(), 0.5 * (0.25 + 0.01) / 2, rel_tol=1e-6)


def _repad(ro, pad_id, left=2, right=3):
    "The same rollout with `left` more prompt padding columns and `right` more response padding columns."
    B = ro["query"].shape[0]
    q = torch.cat([torch.full((B, left), pad_id), ro["query"]], 1)
    qm = torch.cat([torch.zeros(B, left, dtype=torch.long), ro["query_mask"]], 1)
    r = torch.cat([ro["response"], torch.full((B, right), pad_id)], 1)
    rm = torch.cat([ro["response_mask"], torch.zeros(B, right, dtype=torch.long)], 1)
    return {**ro, "query": q, "query_mask": qm, "response": r, "response_mask": rm}


def test_padding_changes_nothing(policy, records):
    lm, tok = policy
    seed_everything(0)
    model = PolicyWithValueHead(lm)
    torch.nn.init.normal_(model.v_head.weight, std=0.1)
    model.eval()
    ref = load_policy("tiny-sft")[0]
    with torch.no_grad():  # a reference that differs from the policy, so the KL term is not zero
        for p in ref.parameters():
            p.add_(0.01 * torch.randn_like(p))
    prompts = [format_prompt(r["instruction"], r["input"]) for r in records[:6]]
    ro = rollout(lm, tok, prompts, max_new_tokens=16, temperature=1.0)
    ro2 = _repad(ro, tok.pad_token_id)
    # the score goes on the last real response token, which is EOS whenever the response ended
    last = ro["response_mask"].sum(1) - 1
    ends = ro["response"][torch.arange(6), last]
    assert (
        ro["has_eos"].any()
        and (ends[ro["has_eos"]] == tok.eos_token_id).all()
        and (ends[~ro["has_eos"]] != tok.eos_token_id).all()
    )
    cfg = PPOConfig(batch_size=6, mini_batch_size=6)
    scores = torch.linspace(-1, 1, 6)
    e1, e2 = make_experience(model, ref, ro, scores, 0.1, cfg), make_experience(model, ref, ro2, scores, 0.1, cfg)
    R = ro["response"].shape[1]
    m = ro["response_mask"].bool()
    for k in ("old_logp", "old_values", "advantages", "returns", "rewards"):
        assert torch.allclose(e1[k][m], e2[k][:, :R][m], atol=1e-5), k
        assert e2[k][:, R:].abs().sum() == 0 or k in ("old_logp", "ref_logp")
    assert torch.allclose(e1["seq_kl"], e2["seq_kl"], atol=1e-4)
    idx = torch.arange(6)
    l1, s1 = ppo_loss(model, ro, e1, idx, cfg)
    l2, s2 = ppo_loss(model, ro2, e2, idx, cfg)
    assert abs(l1.item() - l2.item()) < 1e-5
    assert e1["seq_kl"].abs().sum() > 0


def test_position_ids_skip_left_padding_for_absolute_positions(policy, records):
    "RoPE (the tiny Llama) is shift-invariant; GPT-2's learned positions are not: our forward pass must number positions past the padding."
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tok = policy
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
    ro2 = _repad(ro, tok.pad_token_id, left=5, right=2)
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


def test_adaptive_kl_controller_direction():
    c = AdaptiveKLController(0.1, target=2.0, horizon=100)
    c.update(5.0, 10)
    assert math.isclose(c.value, 0.1 * (1 + 0.2 * 10 / 100))  # above target: up, error clipped at +0.2
    b = c.value
    c.update(1.0, 10)
    assert math.isclose(c.value, b * (1 - 0.2 * 10 / 100))  # below: down (error -0.5 clipped to -0.2)
    b = c.value
    c.update(2.2, 10)
    assert math.isclose(c.value, b * (1 + 0.1 * 10 / 100))  # small error, not clipped
    assert FixedKLController(0.1).update(100.0, 10) == 0.1
    with pytest.raises(CourseError):
        AdaptiveKLController(0.1, target=0.0, horizon=10)


def test_advantage_floor_clamps_only_the_whitened_advantages(policy, records):
    lm, tok = policy
    seed_everything(0)
    model = PolicyWithValueHead(lm).eval()
    ro = rollout(
        lm, tok, [format_prompt(r["instruction"], r["input"]) for r in records[:8]], max_new_tokens=12, temperature=1.0
    )
    scores, m = torch.linspace(-1, 1, 8), ro["response_mask"].bool()
    plain = make_experience(model, lm, ro, scores, 0.1, PPOConfig(batch_size=8, mini_batch_size=8))
    for floor in (0.0, -0.5):
        e = make_experience(
            model, lm, ro, scores, 0.1, PPOConfig(batch_size=8, mini_batch_size=8, advantage_floor=floor)
        )
        assert (
            torch.allclose(e["advantages"][m], plain["advantages"][m].clamp(min=floor))
            and e["advantages"][~m].abs().sum() == 0
        )
        assert torch.equal(e["returns"], plain["returns"])  # the value targets are untouched
    assert (plain["advantages"][m] < -0.5).any()  # so both floors above really clamped something
    for bad in (0.5, float("nan"), "0"):
        with pytest.raises(CourseError, match="advantage_floor"):
            PPOConfig(advantage_floor=bad)


def test_config_validation():
    with pytest.raises(CourseError, match="kl_estimator"):
        PPOConfig(kl_estimator="k2")
    with pytest.raises(CourseError, match="mini_batch_size"):
        PPOConfig(batch_size=10, mini_batch_size=4)
    with pytest.raises(CourseError, match="temperature"):
        PPOConfig(temperature=0.0)


def test_nan_reward_step_is_skipped_and_counted(records):
    calls = {"n": 0}

    def reward(recs, texts):
        calls["n"] += 1
        return [float("nan") if calls["n"] == 2 and i == 0 else float(len(t.split())) for i, t in enumerate(texts)]

    cfg = PPOConfig(steps=3, batch_size=4, mini_batch_size=4, ppo_epochs=1, max_new_tokens=8)
    with pytest.warns(UserWarning, match="skipped"):
        _, h = train_ppo("tiny-sft", reward, records, cfg, progress=False)
    assert h["skipped_nonfinite"] == [0, 1, 1] and len(h["step"]) == 3
    assert math.isnan(h["rm_reward"][1]) and not math.isnan(h["rm_reward"][2])


def test_train_is_deterministic_and_moves_the_policy(records):
    cfg = PPOConfig(steps=2, batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=8, learning_rate=1e-3)
    reward = lambda recs, texts: [float(len(t)) for t in texts]
    p1, h1 = train_ppo("tiny-sft", reward, records, cfg, progress=False)
    _, h2 = train_ppo("tiny-sft", reward, records, cfg, progress=False)
    assert h1["rm_reward"] == h2["rm_reward"] and h1["pg_loss"] == h2["pg_loss"]
    base = load_policy("tiny-sft")[0]
    assert any(not torch.equal(a, b) for a, b in zip(p1.parameters(), base.parameters()))
    assert not hasattr(p1, "v_head")


def test_value_model_from_rm_and_ptx_run(records):
    from instruct_course.train.reward import load_reward_model

    rm, rm_tok = load_reward_model("tiny-rm")
    before = [p.detach().clone() for p in rm.parameters()]
    cfg = PPOConfig(
        steps=2,
        batch_size=4,
        mini_batch_size=4,
        ppo_epochs=1,
        max_new_tokens=8,
        value_init="rm",
        ptx_coef=0.5,
        ptx_batch_size=2,
    )
    _, h = train_ppo("tiny-sft", rm, records, cfg, progress=False, reward_tokenizer=rm_tok)
    assert h["value_model"] == "copy of the reward model" and all(
        math.isfinite(x) for x in h["ptx_loss"] + h["vf_loss"]
    )
    assert all(torch.equal(a, b) for a, b in zip(before, rm.parameters()))  # the reward model itself is not trained


def test_tokenizer_mismatch_refused(policy, records):
    from instruct_course.models import train_tokenizer

    _, tok = policy
    other = train_tokenizer(
        [r["instruction"] + " " + r["response"] for r in make_splits(seed=0)["train"][:200]], vocab_size=300
    )
    with pytest.raises(CourseError, match="different tokenizers"):
        check_same_tokenizer(tok, other)
    check_same_tokenizer(tok, tok)  # same tokenizer: accepted

    class TinyRM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(1, 1)

        def forward(self, input_ids, attention_mask):
            return input_ids.float().mean(1)

    with pytest.raises(CourseError, match="different tokenizers"):
        train_ppo(
            "tiny-sft",
            TinyRM(),
            records,
            PPOConfig(steps=1, batch_size=4, mini_batch_size=4),
            progress=False,
            reward_tokenizer=other,
        )


def test_bad_inputs_named():
    with pytest.raises(CourseError, match="reward_model"):
        train_ppo("tiny-sft", None, [{"instruction": "x"}], progress=False)
    with pytest.raises(CourseError, match="empty"):
        train_ppo("tiny-sft", lambda r, t: [0.0] * len(t), [], progress=False)
    with pytest.raises(CourseError, match=r"prompts_records\[1\]"):
        train_ppo("tiny-sft", lambda r, t: [0.0] * len(t), [{"instruction": "a"}, {"text": "b"}], progress=False)
