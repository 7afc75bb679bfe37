"""Exercises 1 and 2 graded end to end: the solutions score full marks, the blank notebooks 0, and every kind of
wrong solution loses points on the part it breaks (off-by-one, hard-coded answer, endless loop, redefined check,
no training, leak)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from instruct_course.data.world import make_splits
from instruct_course.grading.core import load_exercise
from instruct_course.grading.ex02 import hidden_heldout
from instruct_course.grading.grader import grade_notebook

ROOT = Path(__file__).resolve().parents[2]
EX, SOL = ROOT / "exercises", ROOT / "exercises" / "solutions"
EX1, EX2 = "01_instruction_dataset", "02_sft_before_after"
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


def by_part(rep):
    return {p["name"]: p for p in rep["parts"]}


@pytest.fixture(scope="module")
def grade():
    cache = {}

    def run(key, path, **kw):
        if key not in cache:
            t = time.monotonic()
            cache[key] = grade_notebook(path, **kw)
            TIMINGS[key] = round(time.monotonic() - t, 1)
            rep = cache[key]
            parts = ", ".join(f"{p['name']}={p['points']}" for p in rep["parts"])
            print(f"\n[{key}] {rep['score']}/{rep['max_score']} in {TIMINGS[key]} s: {parts}")
        return cache[key]

    return run


@pytest.mark.parametrize("name", [EX1, EX2])
def test_solution_full_marks(name):
    "Graded by the command line, as an instructor would: full marks, so --fail-under at the maximum exits 0."
    top = load_exercise(name).max_score
    t = time.monotonic()
    cmd = [sys.executable, "-m", "instruct_course.cli", "grade", str(SOL / f"{name}.ipynb"), "--json"]
    p = subprocess.run([*cmd, "--fail-under", str(top)], capture_output=True, text=True, env=ENV, timeout=900, cwd=ROOT)
    TIMINGS[f"{name} solution (cli)"] = round(time.monotonic() - t, 1)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads(p.stdout)
    assert rep["score"] == rep["max_score"] == top and all(x["passed"] for x in rep["parts"]), rep["parts"]
    assert {"name", "points", "max_points", "passed", "message"} <= set(rep["parts"][0])
    if name == EX2:  # the hidden held-out set is summarised, never shown
        fams = ["sentiment", "plural", "compare"]
        train = make_splits(seed=0, n_train=200, n_eval=20, families=fams, heldout_families=())["train"]
        text = json.dumps(rep["parts"])
        assert not any(r["input"] and r["input"] in text or r["instruction"] in text for r in hidden_heldout(train))


@pytest.mark.parametrize("name", [EX1, EX2])
def test_blank_scores_zero(name, grade):
    rep = grade(f"{name} blank", EX / f"{name}.ipynb")
    assert rep["score"] == 0 and all(p["status"] == "not_attempted" for p in rep["parts"])


FAST = {"max_steps=200": "max_steps=5"}  # wrong notebooks of exercise 2 need not train for real: they break elsewhere
EX1_MAKE = (
    'examples = [prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"]) for r in records]'
)
EX2_MAKE = (
    "train_examples = [prepare_instruction_data("
    'r["instruction"], r["response"], tok, input=r["input"]) for r in train_records]'
)
MASK_FIRST = (
    "\nfor e in {}:\n    k = next(j for j, x in enumerate(e['labels']) if x != -100)\n    e['labels'][k] = -100"
)
CHEAT = (
    "\nimport instruct_course.grading.core as G\n"
    "G.Part.grade = lambda self, answers: G.Result(self.name, 'correct', 'ok', self.points, self.points)"
)
REPORTED = '{"exact_match": %s, "per_task": {}, "predictions": []}'  # a number typed in, not measured
WRONG = {  # (exercise, substitutions, the part that must lose its points, a phrase of its message)
    "ex1 off_by_one": (EX1, {EX1_MAKE: EX1_MAKE + MASK_FIRST.format("examples")}, "q3", "off-by-one"),
    "ex1 constant_answer": (
        EX1,
        {"rng.shuffle(records)": 'rng.shuffle(records)\nrecords = [{**r, "response": "yes"} for r in records]'},
        "q1",
        "120 of 120",
    ),
    "ex1 infinite_loop": (
        EX1,
        {"assert reloaded.to_list() == records": "assert reloaded.to_list() == records\nwhile True:\n    pass"},
        "q2",
        "timed out",
    ),
    "ex1 redefined_check": (  # redefine the checks inside the notebook, and hand in 90 records
        EX1,
        {
            'tok = load_tokenizer("tiny")': 'tok = load_tokenizer("tiny")\nq1.check = lambda *a, **k: print("Correct!")'
            + CHEAT,
            "rng.shuffle(records)": "rng.shuffle(records)\nrecords = records[:90]",
        },
        "q1",
        "90 records",
    ),
    "ex2 off_by_one": (EX2, {**FAST, EX2_MAKE: EX2_MAKE + MASK_FIRST.format("train_examples")}, "q2", "off-by-one"),
    "ex2 hard_coded_numbers": (
        EX2,
        {
            **FAST,
            "before = evaluate_exact_match(base, tok, eval_records)": f"before = {REPORTED % 0.25}",
            "after = evaluate_exact_match(sft_model, tok, eval_records)": f"after = {REPORTED % 0.95}",
        },
        "q3",
        "you report before",
    ),
    "ex2 infinite_loop": (
        EX2,
        {"sft_model = train_sft_stage(": "while True:\n    pass\nsft_model = train_sft_stage("},
        "q4",
        "timed out",
    ),
    "ex2 redefined_check_no_training": (
        EX2,
        {
            'tok = load_tokenizer("tiny")': 'tok = load_tokenizer("tiny")\n'
            'for q in (q1, q2, q3, q4, q5):\n    q.check = lambda *a, **k: print("Correct!")' + CHEAT,
            "sft_model = train_sft_stage(": "sft_model = load_model('tiny', device='cpu')\n"
            "sft_model.save_pretrained(SFT_DIR)\n_unused = (lambda *a, **k: None)(",
            "plot_loss(SFT_DIR);": "pass",
        },
        "q4",
        "should improve",
    ),
    "ex2 leaky_heldout": (
        EX2,
        {
            **FAST,
            'train_records, eval_records = splits["train"], splits["heldout_instances"]': "train_records = "
            'splits["train"]\neval_records = splits["heldout_instances"][:10] + splits["train"][-10:]',
            "assert not {instance_text(r)": "# assert not {instance_text(r)",
        },
        "q1",
        "same instance",
    ),
}


@pytest.mark.parametrize("kind", list(WRONG))
def test_wrong_solutions_lose_points(kind, grade, tmp_path):
    name, subs, part, words = WRONG[kind]
    nb = mutate(SOL / f"{name}.ipynb", tmp_path / f"wrong_{kind.replace(' ', '_')}.ipynb", subs)
    rep = grade(kind, nb, timeout_cell=30 if name == EX1 else 45)  # margin for imports on a busy machine
    parts = by_part(rep)
    assert parts[part]["points"] == 0 and parts[part]["status"] == "wrong", parts[part]
    assert words in parts[part]["message"], parts[part]
    assert rep["score"] < rep["max_score"]
    if name == EX1:
        others = [p for n, p in parts.items() if n != part]
        assert all(p["passed"] for p in others), others  # grading went on: the other parts still score
    if kind == "ex2 hard_coded_numbers":
        assert not parts["q5"]["passed"] and "you report after" in parts["q5"]["message"]
    if kind in ("ex2 off_by_one", "ex2 leaky_heldout", "ex2 hard_coded_numbers"):
        assert not parts["q4"]["passed"]  # 5 steps of SFT learn nothing
    if kind == "ex2 infinite_loop":
        assert parts["q1"]["passed"] and parts["q2"]["passed"] and parts["q3"]["passed"]


def test_zz_timings():
    print("\ngrading times (s):", json.dumps(TIMINGS, indent=1))
