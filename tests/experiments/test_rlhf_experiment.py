"""The RLHF experiment: the shipped polite models and the committed full run (results/rlhf.json) meet the course's
targets: the SFT model prefers closers, the reward model learned the labeler, PPO and DPO move the preference rate
while task exact match stays where SFT left it."""

import json
from pathlib import Path

import pytest

from instruct_course.experiments.registry import EXPERIMENTS, get_experiment
from instruct_course.experiments.rlhf import POLITE_RM, POLITE_SFT, load_rankings
from instruct_course.models import shipped_model_dir

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
