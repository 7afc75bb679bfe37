"""The RLHF experiment: the shipped polite models and the committed full run (results/rlhf.json) meet the course's
targets: the SFT model prefers closers, the reward model learned the labeler, PPO and DPO move the preference rate
while task exact match stays where SFT left it."""

import copy
import json
from pathlib import Path

import pytest

from instruct_course.data.masking import format_prompt
from instruct_course.data.world import make_splits
from instruct_course.experiments.registry import EXPERIMENTS, get_experiment
from instruct_course.experiments.rlhf import (
    DPO_SETTINGS,
    POLITE_RM,
    POLITE_SFT,
    PPO_SETTINGS,
    load_rankings,
    measure_policy,
    polite_rm_pairs,
    rlhf_eval_records,
)
from instruct_course.models import load_model, load_tokenizer, shipped_model_dir
from instruct_course.train.dpo import DPOConfig, train_dpo
from instruct_course.train.ppo import PPOConfig, train_ppo
from instruct_course.train.reward import load_reward_model
from instruct_course.train.reward_training import reward_margins

RESULTS = Path(__file__).resolve().parents[2] / "results" / "rlhf.json"


def targets_missed(res: dict) -> list[str]:
    "What the run misses of the targets (empty: all met)."
    missed = []
    if res["sft"]["preference_rate"] > 0.40:
        missed.append("SFT preference rate above 40%")
    if res["rm"]["heldout_accuracy"] < 0.95:
        missed.append("reward model below 95% held-out accuracy")
    for method in ("ppo", "dpo"):
        if res[method]["preference_rate"] < 0.80:
            missed.append(f"{method} preference rate below 80%")
        if abs(res[method]["task_em"] - res["sft"]["task_em"]) > 0.02:
            missed.append(f"{method} task exact match moved more than 2 points")
        if not res[method]["kl"] >= 0:
            missed.append(f"{method} KL missing")
    return missed


def test_committed_full_run_meets_the_targets():
    res = json.loads(RESULTS.read_text())
    assert res["settings"]["quick"] is False and res["eval_prompts"] == 198
    assert targets_missed(res) == []


def test_the_target_check_can_fail():
    res = json.loads(RESULTS.read_text())
    worse = json.loads(json.dumps(res))
    worse["ppo"]["task_em"] = res["sft"]["task_em"] - 0.05
    worse["dpo"]["preference_rate"] = 0.5
    assert targets_missed(worse) == ["ppo task exact match moved more than 2 points", "dpo preference rate below 80%"]


def test_shipped_polite_models():
    sft = json.loads((shipped_model_dir(POLITE_SFT) / "sft_stats.json").read_text())
    assert 0.68 < sft["closers"]["share"] < 0.72 and sft["heldout"]["preference_rate"] <= 0.40
    rm_dir = shipped_model_dir(POLITE_RM)
    stats = json.loads((rm_dir / "rm_stats.json").read_text())
    rankings = load_rankings(rm_dir / "train_rankings.jsonl.gz")
    assert len(rankings) == stats["train"]["prompts"] + stats["train"]["prompts_without_pairs"]
    assert all(set(r["scores"]) <= {0, 1} for r in rankings)


def test_registered():
    assert "rlhf" in EXPERIMENTS
    assert get_experiment("rlhf").__name__ == "run_rlhf"
    with pytest.raises(Exception, match="rlhf"):
        get_experiment("rlfh")


def test_shipped_polite_rm_ranks_heldout_pairs():
    "Measured again here, not read from rm_stats.json: >= 95% of held-out pairs, and the swapped pairs fail."
    rm, tok = load_reward_model(POLITE_RM)
    chosen, rejected = reward_margins(rm, tok, polite_rm_pairs("heldout"))
    assert (chosen > rejected).mean() >= 0.95
    assert (rejected > chosen).mean() <= 0.05


@pytest.fixture(scope="module")
def polite():
    "The polite SFT model, 33 held-out prompts (3 per family) and its preference rate on them."
    sft, tok = load_model(POLITE_SFT, device="cpu"), load_tokenizer(POLITE_SFT)
    records = rlhf_eval_records(3)
    before = measure_policy(sft, tok, records, n_samples=4, seed=0)["preference_rate"]
    return sft, tok, records, before


def ppo_preference_rate(polite, sign: float) -> float:
    "Preference rate after 5 PPO steps of 16 prompts against `sign` x the polite reward model."
    sft, tok, records, _ = polite
    rm, rm_tok = load_reward_model(POLITE_RM)

    def reward(recs, responses):
        prompts = [format_prompt(r["instruction"], r.get("input", "") or "") for r in recs]
        return [sign * s for s in rm.score(prompts, responses, rm_tok)]

    cfg = PPOConfig(**{**PPO_SETTINGS, "steps": 5, "batch_size": 16, "mini_batch_size": 16, "seed": 0})
    train = make_splits(seed=0)["train"]
    ref = copy.deepcopy(sft)  # train_ppo freezes its reference: never hand it the shared model
    policy, _ = train_ppo(copy.deepcopy(sft), reward, train, cfg, progress=False, tokenizer=tok, ref_model=ref)
    return measure_policy(policy, tok, records, n_samples=4, seed=0)["preference_rate"]


def dpo_preference_rate(polite, swapped: bool) -> float:
    "Preference rate after 30 DPO steps on 800 of the reward model's pairs (chosen and rejected swapped if asked)."
    sft, tok, records, _ = polite
    pairs = polite_rm_pairs("train")[:800]
    if swapped:
        pairs = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in pairs]
    cfg = DPOConfig(**{**DPO_SETTINGS, "max_steps": 30, "learning_rate": 1e-4, "seed": 0})
    policy, _ = train_dpo(copy.deepcopy(sft), copy.deepcopy(sft), tok, pairs, cfg, progress=False)
    return measure_policy(policy, tok, records, n_samples=4, seed=0)["preference_rate"]


def test_short_ppo_run_raises_the_preference_rate(polite):
    before = polite[3]
    assert ppo_preference_rate(polite, +1.0) > before + 0.15
    assert ppo_preference_rate(polite, -1.0) < before  # the reward's sign flipped: it falls instead


def test_short_dpo_run_raises_the_preference_rate(polite):
    before = polite[3]
    assert dpo_preference_rate(polite, swapped=False) > before + 0.15
    assert dpo_preference_rate(polite, swapped=True) < before  # preferences reversed: it falls instead
