"""Exercises 1 and 2 graded end to end in quick mode: the solutions score full marks, the blank notebooks 0, and every
kind of wrong or cheating solution loses the points of the part it breaks (off-by-one, wrong or constant or copied
answers, an endless loop, a redefined check, no training, a copied shipped model, a missing log, a leak)."""

import json
import subprocess
import sys
import time

import pytest
from grading_helpers import ENV, EX, ROOT, SOL, TIMINGS, by_part, mutate, report_timings, wrong_variant

from instruct_course.data.world import make_splits
from instruct_course.grading.core import load_exercise
from instruct_course.grading.ex02 import hidden_heldout

EX1, EX2 = "01_instruction_dataset", "02_sft_before_after"


@pytest.mark.parametrize("name", [EX1, EX2])
def test_solution_full_marks(name, quick):
    "Graded by the command line in quick mode, as CI does: full marks, so --fail-under at the maximum exits 0."
    top = load_exercise(name).max_score
    t = time.monotonic()
    cmd = [sys.executable, "-m", "instruct_course.cli", "grade", str(SOL / f"{name}.ipynb"), "--json", "--quick"]
    p = subprocess.run([*cmd, "--fail-under", str(top)], capture_output=True, text=True, env=ENV, timeout=900, cwd=ROOT)
    TIMINGS[f"{name} solution (cli, quick)"] = round(time.monotonic() - t, 1)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads(p.stdout)
    assert rep["score"] == rep["max_score"] == top and all(x["passed"] for x in rep["parts"]), rep["parts"]
    assert rep["mode"] == "quick" and {"name", "points", "max_points", "passed", "message"} <= set(rep["parts"][0])
    if name == EX2:  # the hidden held-out set is summarised, never shown
        fams = ["sentiment", "plural", "compare"]
        train = make_splits(seed=0, n_train=200, n_eval=20, families=fams, heldout_families=())["train"]
        text = json.dumps(rep["parts"])
        assert not any(r["input"] and r["input"] in text or r["instruction"] in text for r in hidden_heldout(train))


@pytest.mark.parametrize("name", [EX1, EX2])
def test_blank_scores_zero(name, grade, quick):
    rep = grade(f"{name} blank", EX / f"{name}.ipynb")
    assert rep["score"] == 0 and all(p["status"] == "not_attempted" for p in rep["parts"]), rep["parts"]


FAST = {"max_steps=STEPS": "max_steps=5"}  # wrong notebooks of exercise 2 need not train for real: they break elsewhere
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
SHUFFLE = "rng.shuffle(records)"
TRAIN = "sft_model = train_sft_stage("
WORLD = (
    "from instruct_course.data.world import make_splits\nrecords = [{k: r[k] for k in ('instruction', 'input', "
    "'response', 'task')} for r in make_splits(seed=0, n_train=20, n_eval=1, heldout_families=())['train']]"
)
WRONG = {  # (exercise, substitutions, the part that must lose its points, a phrase of its message)
    "ex1 off_by_one": (EX1, {EX1_MAKE: EX1_MAKE + MASK_FIRST.format("examples")}, "q3", "off-by-one"),
    "ex1 constant_answer": (
        EX1,
        {SHUFFLE: f'{SHUFFLE}\nrecords = [{{**r, "response": "yes"}} for r in records]'},
        "q1",
        "120 of 120",
    ),
    "ex1 wrong_arithmetic": (EX1, {"str(a + b)": "str(a + b + 1)"}, "q1", "20 of the 60 answers"),  # 2 + 3 -> "6"
    "ex1 constant_per_task": (
        EX1,
        {'"positive" if good else "negative"': '"positive"'},
        "q1",
        "all 20 records of task 'sentiment'",
    ),
    "ex1 copied_from_world": (EX1, {SHUFFLE: f"{SHUFFLE}\n{WORLD}"}, "q1", "course world's own records"),
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
            SHUFFLE: f"{SHUFFLE}\nrecords = records[:90]",
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
    "ex2 infinite_loop": (EX2, {TRAIN: "while True:\n    pass\n" + TRAIN}, "q4", "timed out"),
    "ex2 copied_tiny_sft": (  # the one-liner: no training, a shipped model saved where the model should be
        EX2,
        {
            TRAIN: "sft_model = load_model('tiny-sft', device='cpu')\nsft_model.save_pretrained(SFT_DIR)\n"
            "_unused = (lambda *a, **k: None)(",
            "plot_loss(SFT_DIR);": "pass",
        },
        "q4",
        "has no course_run.json",
    ),
    "ex2 tiny_sft_behind_a_real_run": (  # a real (short) run, then tiny-sft's weights saved over its model
        EX2,
        {**FAST, "plot_loss(SFT_DIR);": "load_model('tiny-sft', device='cpu').save_pretrained(SFT_DIR)"},
        "q4",
        "the shipped model 'tiny-sft'",
    ),
    "ex2 missing_log": (
        EX2,
        {**FAST, "plot_loss(SFT_DIR);": "import os\nos.remove(os.path.join(SFT_DIR, 'log_history.json'))"},
        "q4",
        "log_history.json",
    ),
    "ex2 redefined_check_no_training": (
        EX2,
        {
            'tok = load_tokenizer("tiny")': 'tok = load_tokenizer("tiny")\n'
            'for q in (q1, q2, q3, q4, q5):\n    q.check = lambda *a, **k: print("Correct!")' + CHEAT,
            TRAIN: "sft_model = load_model('tiny', device='cpu')\n"
            "sft_model.save_pretrained(SFT_DIR)\n_unused = (lambda *a, **k: None)(",
            "plot_loss(SFT_DIR);": "pass",
        },
        "q4",
        "course_run.json",
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
def test_wrong_solutions_lose_points(kind, grade, tmp_path, quick):
    name, subs, part, words = WRONG[kind]
    limit = 30 if name == EX1 else 60  # margin for imports on a busy machine
    rep = wrong_variant(grade, tmp_path, kind, name, subs, part, words, timeout_cell=limit)
    parts = by_part(rep)
    if name == EX1:
        others = [p for n, p in parts.items() if n != part]
        assert all(p["passed"] for p in others), others  # grading went on: the other parts still score
    if kind == "ex2 hard_coded_numbers":
        assert not parts["q5"]["passed"] and "you report after" in parts["q5"]["message"]
    if kind in ("ex2 off_by_one", "ex2 leaky_heldout", "ex2 hard_coded_numbers"):
        assert not parts["q4"]["passed"]  # 5 steps of SFT learn nothing
    if kind == "ex2 infinite_loop":
        assert parts["q1"]["passed"] and parts["q2"]["passed"] and parts["q3"]["passed"]


def test_mutate_refuses_ambiguous_targets(tmp_path):
    with pytest.raises(AssertionError, match="not unique"):
        mutate(SOL / f"{EX1}.ipynb", tmp_path / "x.ipynb", {"import": "import"})


def test_zz_timings():
    report_timings()
