"bench.ppo: a tiny benchmark run returns the fields the CLI prints, as JSON-safe values."

import json

from instruct_course.bench.ppo import bench_ppo


def test_bench_ppo_small():
    b = bench_ppo(steps=2, batch_size=4, max_new_tokens=6)
    assert b["steps_timed"] == 1 and b["reward"] == "tiny-rm" and b["model"] == "tiny-sft"
    assert set(b["step_seconds"]) == {"rollout", "scoring", "update", "total"} and b["step_seconds"]["total"] > 0
    assert set(b["rollout_tokens_per_s"]) == {"kv_cache", "no_cache", "speedup"}
    json.dumps(b)  # JSON-serialisable
