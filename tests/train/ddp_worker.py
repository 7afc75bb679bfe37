"""Run by tests/train/test_distributed.py (not a test module): PPO or DPO in 2 CPU processes through
`accelerate.debug_launcher` (torch.distributed over gloo, what `accelerate launch` sets up on several GPUs).
Each rank writes what it saw to OUT/rankN.json."""

import hashlib
import json
import os
import random
import sys

import torch
from accelerate import debug_launcher


def _digest(model) -> str:
    return hashlib.sha1(torch.cat([p.detach().flatten() for p in model.parameters()]).numpy().tobytes()).hexdigest()


def main(out: str, what: str):
    torch.set_num_threads(1)
    import torch.distributed as dist

    from instruct_course.data.masking import format_prompt
    from instruct_course.data.world import make_splits

    recs = make_splits(seed=0)["train"][:24]
    if what == "ppo":
        from instruct_course.train.ppo import PPOConfig, train_ppo

        cfg = PPOConfig(
            steps=3,
            batch_size=4,
            mini_batch_size=2,
            ppo_epochs=1,
            max_new_tokens=8,
            learning_rate=1e-3,
            ptx_coef=1.0,
            ptx_batch_size=2,
        )
        model, h = train_ppo(
            "tiny-sft", lambda rs, texts: [float(len(t.split())) for t in texts], recs, cfg, progress=False
        )
        res = {"seen": h["rm_reward"], "kl": h["kl"], "kl_coef": h["kl_coef"]}
    else:
        from instruct_course.models import load_model, load_tokenizer
        from instruct_course.train.dpo import DPOConfig, train_dpo

        rng = random.Random(0)
        pairs = [
            {
                "prompt": format_prompt(r["instruction"], r["input"]),
                "chosen": r["response"],
                "rejected": rng.choice([o["response"] for o in recs if o["response"] != r["response"]]),
                "group": i,
            }
            for i, r in enumerate(recs)
        ]
        model, h = train_dpo(
            load_model("tiny-sft", device="cpu"),
            load_model("tiny-sft", device="cpu"),
            load_tokenizer("tiny-sft"),
            pairs,
            DPOConfig(max_steps=3, batch_size=4, learning_rate=1e-3, warmup_steps=1),
            progress=False,
        )
        res = {"seen": h["loss"], "processes": h["processes"]}
    rank = dist.get_rank() if dist.is_initialized() else 0
    res.update(rank=rank, world=dist.get_world_size() if dist.is_initialized() else 1, weights=_digest(model))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    debug_launcher(main, args=(sys.argv[1], sys.argv[2]), num_processes=2)
