"""Helpers of the exercise tests (conftest.py makes fixtures of `_quick` and `_grade`): quick mode for a test
module, grading cached per module, wrong variants of a solution made by text substitution, the times collected."""

import json
import os
import time
from pathlib import Path

import nbformat

from instruct_course.grading.core import QUICK_ENV
from instruct_course.grading.grader import grade_notebook

ROOT = Path(__file__).resolve().parents[2]
EX, SOL = ROOT / "exercises", ROOT / "exercises" / "solutions"
os.environ.setdefault("OMP_NUM_THREADS", "1")  # kernels inherit it: one thread per process on a shared 2-core runner
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TIMINGS = {}


def mutate(src: Path, dst: Path, subs: dict) -> Path:
    "A wrong solution: the solution notebook with text substitutions (each must hit exactly one place)."
    nb = nbformat.read(str(src), as_version=4)
    for old, new in subs.items():
        hits = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        assert len(hits) == 1 and hits[0].source.count(old) == 1, f"substitution target not unique: {old!r}"
        hits[0].source = hits[0].source.replace(old, new)
    nbformat.write(nb, str(dst))
    return dst


def by_part(rep: dict) -> dict:
    return {p["name"]: p for p in rep["parts"]}


def _quick():
    "Quick mode for the whole module (the grader's kernels inherit it), restored afterwards."
    old = os.environ.get(QUICK_ENV)
    os.environ[QUICK_ENV] = "1"
    yield
    if old is None:
        os.environ.pop(QUICK_ENV, None)
    else:
        os.environ[QUICK_ENV] = old


def _grade():
    "grade(key, notebook, **limits): the grader's report, computed once per key and module; times are kept."
    cache = {}

    def run(key, path, **kw):
        if key not in cache:
            t = time.monotonic()
            cache[key] = grade_notebook(path, **kw)
            TIMINGS[key] = round(time.monotonic() - t, 1)
            rep = cache[key]
            parts = ", ".join(f"{p['name']}={p['points']}" for p in rep["parts"])
            print(f"\n[{key}] {rep['score']}/{rep['max_score']} in {TIMINGS[key]} s: {parts}")
            log_grade(key, rep, TIMINGS[key])
        return cache[key]

    return run


def wrong_variant(grade, tmp_path, kind: str, name: str, subs: dict, part: str, words: str, **limits) -> dict:
    "Grade a wrong variant of solution `name`: `part` must lose its points as 'wrong', with `words` in the message."
    nb = mutate(SOL / f"{name}.ipynb", tmp_path / f"{name}.ipynb", subs)
    rep = grade(kind, nb, **limits)
    p = by_part(rep)[part]
    assert p["points"] == 0 and p["status"] == "wrong", p
    assert words in p["message"], p
    assert rep["score"] < rep["max_score"]
    return rep


GRADES_LOG = ROOT / "tests" / "runs" / "exercise_grades.jsonl"  # gitignored; one line per grading, for the notes


def log_grade(key: str, rep: dict, seconds: float) -> None:
    "Append one grading's score, parts and time to GRADES_LOG (several pytest workers may append at once)."
    GRADES_LOG.parent.mkdir(parents=True, exist_ok=True)
    parts = {p["name"]: p["points"] for p in rep["parts"]}
    line = json.dumps({"key": key, "score": rep["score"], "max_score": rep["max_score"], "parts": parts, "s": seconds})
    with open(GRADES_LOG, "a") as f:
        f.write(line + "\n")


def grade_solution_by_cli(name: str) -> dict:
    "Grade solution `name` by the CLI in quick mode, as CI does: full marks, so --fail-under at the top exits 0."
    import subprocess
    import sys

    from instruct_course.grading.core import load_exercise

    top, key, t = load_exercise(name).max_score, f"{name} solution (cli, quick)", time.monotonic()
    cmd = [sys.executable, "-m", "instruct_course.cli", "grade", str(SOL / f"{name}.ipynb"), "--json", "--quick"]
    p = subprocess.run([*cmd, "--fail-under", str(top)], capture_output=True, text=True, env=ENV, timeout=900, cwd=ROOT)
    TIMINGS[key] = round(time.monotonic() - t, 1)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads(p.stdout)
    log_grade(key, rep, TIMINGS[key])
    assert rep["score"] == rep["max_score"] == top, rep["parts"]
    return rep


def report_timings():
    print("\ngrading times (s):", json.dumps(TIMINGS, indent=1))
