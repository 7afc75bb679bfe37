"""The instruct-course command line: every command's wiring, JSON printed whole (never cut), progress on stderr,
refused inputs (demo --steps 0, missing experiment modules) with exit code 2."""

import json
import subprocess
import sys
import textwrap

import pytest

from instruct_course import cli
from instruct_course.core import read_jsonl
from instruct_course.data.world import SPLITS
from instruct_course.experiments import registry


def run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "instruct_course.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def test_cli_world_export(tmp_path):
    r = run("world", "export", tmp_path, "--n-train", 20, "--n-eval", 4, "--n-docs", 10)
    assert r.returncode == 0, r.stderr
    for s in SPLITS:
        recs = read_jsonl(tmp_path / f"{s}.jsonl", required=["instruction", "input", "response", "task", "template_id"])
        assert recs
    assert (tmp_path / "pretrain.txt").read_text().strip()
    assert json.loads(r.stdout)["train"] > 0


def test_cli_world_export_refuses_a_non_empty_folder_without_force(tmp_path):
    (tmp_path / "train.jsonl").write_text("my own data\n")
    r = run("world", "export", tmp_path, "--n-train", 5, "--n-eval", 1, "--n-docs", 5)
    assert r.returncode == 2 and "--force" in r.stderr and "Traceback" not in r.stderr and r.stdout == ""
    assert (tmp_path / "train.jsonl").read_text() == "my own data\n"
    r = run("world", "export", tmp_path / "train.jsonl" / "sub")  # a path through a file: exit 2, no traceback
    assert r.returncode == 2 and "is a file, not a folder" in r.stderr and "Traceback" not in r.stderr
    r = run("world", "export", tmp_path, "--n-train", 5, "--n-eval", 1, "--n-docs", 5, "--force")
    assert r.returncode == 0 and json.loads(r.stdout)["train"] > 0
    assert read_jsonl(tmp_path / "train.jsonl", required=["instruction", "response"])


@pytest.fixture
def fake_module(tmp_path, monkeypatch):
    "A module `fake_targets` on sys.path with an experiment, a demo and a benchmark that print and return a lot."
    (tmp_path / "fake_targets.py").write_text(
        textwrap.dedent("""
        import json, math
        from pathlib import Path
        import numpy as np

        CALLS = []

        def big():
            return {"curve": [{"step": i, "kl": np.float32(i / 7), "gold": math.nan} for i in range(2000)]}

        def experiment(out_dir, seed, quick):
            print("progress: step 1 of 1")
            CALLS.append(("experiment", out_dir, seed, quick))
            return {"out_dir": Path(out_dir), "seed": seed, "quick": quick, **big()}

        def run_demo(out_dir, max_steps=None, seed=0):
            print("training...")
            CALLS.append(("demo", max_steps))
            splits = {"heldout_instances": {"exact_match": 0.1}, "heldout_families": {"exact_match": 0.0}}
            after = {"heldout_instances": {"exact_match": 0.92}, "heldout_families": {"exact_match": 0.05}}
            m = {"before": {"splits": splits}, "after": {"splits": after}, "sft": {"steps": 1400, "seconds": 1.5}}
            m["predictions"] = [{"i": i, "text": "x" * 20} for i in range(500)]
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "metrics.json").write_text(json.dumps(m))
            return m

        def bench():
            print("warming up")
            return big()
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import fake_targets

    fake_targets.CALLS.clear()
    return fake_targets


def test_experiment_prints_the_whole_result_as_json(fake_module, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(registry.EXPERIMENTS, "fake", ("fake_targets:experiment", "a test experiment"))
    assert cli.main(["experiment", "fake", "--out", str(tmp_path / "o"), "--seed", "3", "--quick"]) == 0
    out, err = capsys.readouterr()
    res = json.loads(out)  # the whole object (14 kB and more), valid JSON: NaN -> null, numpy -> float
    assert len(out) > 6000 and len(res["curve"]) == 2000 and res["curve"][-1]["gold"] is None
    assert res["seed"] == 3 and res["quick"] is True and res["out_dir"] == str(tmp_path / "o")
    assert "progress: step 1 of 1" in err  # the experiment's own printing goes to stderr


def test_experiment_registry_and_missing_module(monkeypatch, capsys):
    targets = {k: spec for k, (spec, _) in registry.EXPERIMENTS.items()}
    assert targets == {
        "demo-seeds": "instruct_course.experiments.sft:run_demo_seeds",
        "loss-on": "instruct_course.experiments.sft:run_loss_on",
        "multitask": "instruct_course.experiments.multitask:run_multitask_experiment",
        "pitfalls": "instruct_course.experiments.pitfalls:run_pitfalls_experiment",
        "overoptimization": "instruct_course.experiments.ppo:run_overoptimization",
        "judge": "instruct_course.experiments.judge:run_judge_agreement",
        "rlhf": "instruct_course.experiments.rlhf:run_rlhf",
        "dpo-vs-ppo": "instruct_course.experiments.dpo:run_dpo_vs_ppo",
    }
    monkeypatch.setitem(registry.EXPERIMENTS, "ghost", ("instruct_course.experiments.ghost:run_ghost", "missing"))
    assert cli.main(["experiment", "ghost"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "experiment 'ghost' is not available" in err and "instruct_course.experiments.ghost" in err
    r = run("experiment", "--help")
    assert r.returncode == 0 and all(name in r.stdout for name in targets)


def test_demo_prints_a_summary_and_the_path(fake_module, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DEMO", "fake_targets:run_demo")
    out_dir = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out_dir), "--steps", "5"]) == 0
    out, _ = capsys.readouterr()
    assert str(out_dir / "metrics.json") in out and "92.0%" in out and "{" not in out  # no JSON dump, cut or whole
    assert fake_module.CALLS == [("demo", 5)]
    assert cli.main(["demo", "--out", str(out_dir), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == json.loads((out_dir / "metrics.json").read_text())  # whole, and valid
    assert "training..." in err and fake_module.CALLS[-1] == ("demo", None)  # None: run_demo's own default


@pytest.mark.parametrize("steps", ["0", "-3", "1.5", "lots"])
def test_demo_steps_must_be_a_positive_int(steps, fake_module, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DEMO", "fake_targets:run_demo")
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--steps", steps])
    assert e.value.code == 2 and "positive integer" in capsys.readouterr().err
    assert fake_module.CALLS == []  # refused, never run with some default


def test_demo_help_states_the_real_default():
    from instruct_course.experiments.sft import COURSE_DEMO_STEPS

    r = run("demo", "--help")
    assert r.returncode == 0 and f"default {COURSE_DEMO_STEPS})" in " ".join(r.stdout.split()), r.stdout


def test_bench_prints_whole_json_and_names_a_missing_module(fake_module, monkeypatch, capsys):
    monkeypatch.setitem(cli.BENCHES, "sft", "fake_targets:bench")
    assert cli.main(["bench", "sft", "--json"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and len(json.loads(out)["curve"]) == 2000 and "warming up" in err
    monkeypatch.setitem(cli.BENCHES, "sft", "instruct_course.bench.ghost:bench_ghost")
    assert cli.main(["bench", "sft"]) == 2
    assert "benchmark 'sft' is not available" in capsys.readouterr().err
    assert cli.BENCHES["generate"] == "instruct_course.bench.generate:bench_generate_dtypes"
    assert cli.BENCHES["ppo"] == "instruct_course.bench.ppo:bench_ppo"


def test_pretrain_refuses_bad_settings(tmp_path):
    r = run("pretrain", "--out", tmp_path / "p", "--steps", "0")
    assert r.returncode == 2 and "steps" in r.stderr and "Traceback" not in r.stderr
    r = run("pretrain", "--out", tmp_path / "p", "--lr", "0")
    assert r.returncode == 2 and "PretrainConfig.lr must be > 0" in r.stderr and "Traceback" not in r.stderr


def _pretrain_defaults_that_differ(argv: list[str]) -> list[str]:
    "The `pretrain` flags whose parsed value differs from `PretrainConfig`'s default for the same field."
    from dataclasses import fields

    from instruct_course.train.pretrain import PretrainConfig

    parsed = vars(cli.build_parser().parse_args(["pretrain", "--out", "x", *argv]))
    shared = sorted(set(parsed) & {f.name for f in fields(PretrainConfig)})
    assert shared == ["batch_size", "lr", "n_docs", "save_every", "seed", "steps"], shared  # every flag is a field
    return [k for k in shared if parsed[k] != getattr(PretrainConfig(), k)]


def test_pretrain_flags_default_to_pretrain_config():
    "The parser is built without importing torch, so its defaults repeat PretrainConfig's: they must agree."
    assert _pretrain_defaults_that_differ([]) == []
    assert _pretrain_defaults_that_differ(["--lr", "1e-3", "--steps", "7"]) == ["lr", "steps"]  # the check can fail


def test_grade_is_wired(tmp_path):
    r = run("grade", tmp_path / "missing.ipynb", "--json")
    assert r.returncode == 2 and "no such notebook" in json.loads(r.stdout)["error"]
    r = run("grade", "--help")
    assert r.returncode == 0 and "--fail-under" in r.stdout


def test_experiment_json_is_one_line(monkeypatch, capsys):
    "`experiment NAME --json` prints one compact line of JSON; without --json the same object, indented."
    monkeypatch.setitem(registry.EXPERIMENTS, "tiny", ("json:loads", "a stand-in"))
    monkeypatch.setattr(registry, "get_experiment", lambda name: lambda **kw: {"name": name, "quick": kw["quick"]})
    monkeypatch.setattr(cli, "get_experiment", registry.get_experiment)
    assert cli.main(["experiment", "tiny", "--quick", "--json"]) == 0
    out = capsys.readouterr().out
    assert out == '{"name": "tiny", "quick": true}\n'
    assert cli.main(["experiment", "tiny"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 4 and json.loads(out) == {"name": "tiny", "quick": False}
