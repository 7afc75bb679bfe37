"""Fixtures shared by the training tests: DPO preference pairs from the world, PPO prompt records, and `repad` (a
rollout with extra padding columns, for the padding-invariance tests)."""

import random

import pytest
import torch

from instruct_course.data.masking import format_prompt
from instruct_course.data.world import make_splits


@pytest.fixture(scope="module")
def pairs():
    """Hand-made pairs from the world: chosen = the reference answer, rejected = another record's answer of the same
    family."""
    recs = make_splits(
        seed=0,
        n_train=40,
        n_eval=4,
        families=["sentiment", "uppercase", "plural", "arithmetic"],
        heldout_families=["plural"],
    )["train"]
    rng, out = random.Random(0), []
    for r in recs:
        others = sorted({o["response"] for o in recs if o["task"] == r["task"] and o["response"] != r["response"]})
        out.append(
            {
                "prompt": format_prompt(r["instruction"], r["input"]),
                "chosen": r["response"],
                "rejected": rng.choice(others),
                "instruction": r["instruction"],
                "input": r["input"],
                "response": r["response"],
                "task": r["task"],
                "group": len(out),
            }
        )
    return out


@pytest.fixture(scope="module")
def records(splits):
    "Twelve training records of the world (seed 0): the prompts of the PPO tests."
    return splits["train"][:12]


def _repad(ro, pad_id, left=2, right=3):
    "The same rollout with `left` more prompt padding columns and `right` more response padding columns."
    B = ro["query"].shape[0]
    q = torch.cat([torch.full((B, left), pad_id), ro["query"]], 1)
    qm = torch.cat([torch.zeros(B, left, dtype=torch.long), ro["query_mask"]], 1)
    r = torch.cat([ro["response"], torch.full((B, right), pad_id)], 1)
    rm = torch.cat([ro["response_mask"], torch.zeros(B, right, dtype=torch.long)], 1)
    return {**ro, "query": q, "query_mask": qm, "response": r, "response_mask": rm}


@pytest.fixture
def repad():
    "_repad(ro, pad_id, left=2, right=3)."
    return _repad
