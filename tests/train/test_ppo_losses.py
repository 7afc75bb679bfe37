"""train.ppo_losses: GAE by hand, masked whitening, the KL estimators and per-token rewards, each loss term by hand,
the KL controllers."""

import math

import pytest
import torch

from instruct_course.core import CourseError
from instruct_course.train.ppo_losses import (
    AdaptiveKLController,
    FixedKLController,
    compute_gae,
    entropy_from_logits,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    per_token_rewards,
    policy_loss,
    value_loss,
)


def test_gae_matches_hand_computation():
    # gamma 0.9, lambda 0.8; the 4th position is padding (its reward 7 and value 3 must not leak back)
    rew = torch.tensor([[0.0, -0.1, 1.0, 7.0]])
    val = torch.tensor([[0.2, 0.4, 0.5, 3.0]])
    m = torch.tensor([[1, 1, 1, 0]])
    adv, ret = compute_gae(rew, val, m, gamma=0.9, lam=0.8)
    # t=2: d=1-0.5=0.5, A=0.5; t=1: d=-0.1+0.9*0.5-0.4=-0.05, A=-0.05+0.72*0.5=0.31;
    # t=0: d=0+0.9*0.4-0.2=0.16, A=0.16+0.72*0.31=0.3832
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


def test_logprobs_and_entropy_by_hand():
    logits = torch.tensor([[[2.0, 1.0, 0.0]]])
    assert math.isclose(
        logprobs_from_logits(logits, torch.tensor([[0]]), 0.5).item(),
        math.log(torch.softmax(logits / 0.5, -1)[0, 0, 0].item()),
        rel_tol=1e-6,
    )
    assert math.isclose(entropy_from_logits(torch.zeros(1, 1, 4)).item(), math.log(4), rel_tol=1e-6)
    with pytest.raises(CourseError, match="temperature"):
        logprobs_from_logits(logits, torch.tensor([[0]]), 0.0)


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
