"""train.ppo and train.dpo under two processes (accelerate's CPU debug launcher: torch.distributed with gloo, the
code path `accelerate launch` takes on several GPUs): the processes see different data, their weights stay identical."""

import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("ddp_worker.py")


def _launch(tmp_path, what):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path), what], capture_output=True, text=True, timeout=600, env=env
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert [x["world"] for x in ranks] == [2, 2] and [x["rank"] for x in ranks] == [0, 1]
    return ranks


def test_ppo_two_processes_stay_in_sync(tmp_path):
    a, b = _launch(tmp_path, "ppo")
    assert a["seen"] != b["seen"]  # each process sampled its own prompts ...
    assert (
        a["weights"] == b["weights"]
    )  # ... and the averaged gradients kept the two copies identical (PPO-ptx included)
    assert a["kl"] == b["kl"] and a["kl_coef"] == b["kl_coef"]  # one KL, averaged over processes, drives one β


def test_dpo_two_processes_stay_in_sync(tmp_path):
    a, b = _launch(tmp_path, "dpo")
    assert a["processes"] == b["processes"] == 2
    assert a["weights"] == b["weights"]
