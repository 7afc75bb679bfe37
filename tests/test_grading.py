"""The grader and the exercises: solutions score full marks, blank notebooks score 0, and every kind of wrong
solution loses points on the part it breaks (off-by-one, hard-coded answer, endless loop, redefined check, leak)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from instruct_course.grading.core import (
    BEGIN,
    END,
    STUB,
    Answers,
    _solution_from_files,
    cell_part,
    grade_main,
    grade_notebook,
    hidden_heldout,
    is_check_cell,
    load_exercise,
    make_student_notebook,
)

ROOT = Path(__file__).resolve().parents[1]
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
            print(
                f"\n[{key}] {rep['score']}/{rep['max_score']} in {TIMINGS[key]} s: "
                + ", ".join(f"{p['name']}={p['points']}" for p in rep["parts"])
            )
        return cache[key]

    return run


def cli(*args, timeout=600):
    t = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "instruct_course.grading.core", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
        cwd=ROOT,
    )
    return p, time.monotonic() - t


# ---------------------------------------------------------------- learner notebooks are generated from the solutions
@pytest.mark.parametrize("name", [EX1, EX2])
def test_learner_notebook_in_sync(name, tmp_path):
    fresh = make_student_notebook(SOL / f"{name}.ipynb", tmp_path / f"{name}.ipynb")
    a, b = nbformat.read(str(fresh), as_version=4), nbformat.read(str(EX / f"{name}.ipynb"), as_version=4)
    assert [(c.cell_type, c.source) for c in a.cells] == [(c.cell_type, c.source) for c in b.cells], (
        f"exercises/{name}.ipynb is out of date: regenerate it with make_student_notebook from exercises/solutions/"
    )
    assert b.metadata["instruct_course"]["exercise"] == name
    for c in b.cells:
        assert BEGIN not in c.source and END not in c.source
        if c.cell_type == "code":
            assert not c.outputs
    sol = nbformat.read(str(SOL / f"{name}.ipynb"), as_version=4)
    parts = {cell_part(c.source) for c in sol.cells if c.cell_type == "code" and BEGIN in c.source}
    assert parts == {p.name for p in load_exercise(name).parts}  # every part has a solution region, and a stub
    assert sum(STUB in c.source for c in b.cells) == len(parts)


def test_solution_lookup_and_check_cells(monkeypatch):
    monkeypatch.chdir(EX)  # where a learner's notebook runs
    assert "prepare_instruction_data" in _solution_from_files(EX1, "q3")
    assert "train_sft_stage" in _solution_from_files(EX2, "q4")
    assert (
        is_check_cell("q1.check()")
        and is_check_cell("# q1.hint()\n# q1.solution()")
        and not is_check_cell("x = 1\nq1.check()")
    )
    assert cell_part("# PART: q2\nx = 1") == "q2" and cell_part("x = 1") is None


# ---------------------------------------------------------------- the check API in-process: three states, quiet, specific
def test_checks_three_states_and_quiet(capsys, tmp_path):
    q1 = load_exercise(EX1).part("q1")
    recs = [
        {"instruction": f"What is {i} + 3?", "input": "", "response": str(i + 3), "task": f"t{i % 5}"}
        for i in range(100)
    ]
    states = [q1.grade(Answers(v)).status for v in ({}, {"records": recs[:70]}, {"records": recs})]
    assert states == ["not_attempted", "wrong", "correct"]
    bad = [dict(r) for r in recs]
    bad[42]["instruction"] = "  "
    msg = q1.grade(Answers({"records": bad})).message
    assert "records[42]" in msg and "'instruction'" in msg and "empty" in msg
    q1.check({"records": recs})  # in a notebook: q1.check() reads the notebook's globals
    out = capsys.readouterr()
    assert "Correct" in out.out and out.err == ""
    q2 = load_exercise(EX1).part("q2")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert q2.grade(Answers({"records": recs, "DATA_PATH": "d.jsonl"}, cwd=tmp_path)).passed
    assert capsys.readouterr().err == ""  # datasets' progress bars are swallowed


# ---------------------------------------------------------------- grader errors: non-zero only when it cannot run
def test_grader_cannot_run(tmp_path, capsys):
    (tmp_path / "text.ipynb").write_text("print('not json')")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(nb, str(tmp_path / "mystery.ipynb"))
    for path, words in [
        (tmp_path / "missing.ipynb", "no such notebook"),
        (tmp_path / "text.ipynb", "not a Jupyter notebook"),
        (tmp_path / "mystery.ipynb", "which exercise"),
        (tmp_path, "directory"),
    ]:
        assert grade_main([str(path)]) == 2
        err = capsys.readouterr().err
        assert words in err, err
    p, _ = cli(tmp_path / "missing.ipynb")
    assert p.returncode == 2 and "no such notebook" in p.stderr and p.stdout == ""


# ---------------------------------------------------------------- exercise 1
def test_ex1_solution_full_marks_cli():
    p, secs = cli(SOL / f"{EX1}.ipynb", "--json", timeout=300)
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    TIMINGS["ex1 solution (cli)"] = round(secs, 1)
    assert rep["score"] == rep["max_score"] == 8 and all(x["passed"] for x in rep["parts"]), rep["parts"]
    assert {"name", "points", "max_points", "passed", "message"} <= set(rep["parts"][0])
    print(f"\n[ex1 solution] graded by the CLI in {secs:.1f} s")


def test_ex1_blank_scores_zero(grade):
    rep = grade("ex1 blank", EX / f"{EX1}.ipynb")
    assert rep["score"] == 0 and all(p["status"] == "not_attempted" for p in rep["parts"])


EX1_WRONG = {
    # the first response token masked too
    "off_by_one": (
        {
            'examples = [prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"]) for r in records]': 'examples = [prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"]) for r in records]\n'
            'for e in examples:\n    k = next(j for j, l in enumerate(e["labels"]) if l != IGNORE_INDEX)\n    e["labels"][k] = IGNORE_INDEX'
        },
        "q3",
        "off-by-one",
    ),
    # one hard-coded answer for every record
    "constant_answer": (
        {"rng.shuffle(records)": 'rng.shuffle(records)\nrecords = [{**r, "response": "yes"} for r in records]'},
        "q1",
        "120 of 120",
    ),
    # a cell that never ends
    "infinite_loop": (
        {"assert reloaded.to_list() == records": "assert reloaded.to_list() == records\nwhile True:\n    pass"},
        "q2",
        "timed out",
    ),
    # redefine the checks inside the notebook, and hand in 90 records
    "redefined_check": (
        {
            'tok = load_tokenizer("tiny")': 'tok = load_tokenizer("tiny")\nq1.check = lambda *a, **k: print("Correct!")\n'
            'import instruct_course.grading.core as G\nG.Part.grade = lambda self, answers: G.Result(self.name, "correct", "ok", self.points, self.points)',
            "rng.shuffle(records)": "rng.shuffle(records)\nrecords = records[:90]",
        },
        "q1",
        "90 records",
    ),
}


@pytest.mark.parametrize("kind", list(EX1_WRONG))
def test_ex1_wrong_solutions_lose_points(kind, grade, tmp_path):
    subs, part, words = EX1_WRONG[kind]
    rep = grade(f"ex1 {kind}", mutate(SOL / f"{EX1}.ipynb", tmp_path / f"wrong_{kind}.ipynb", subs), timeout_cell=15)
    parts = by_part(rep)
    assert parts[part]["points"] == 0 and parts[part]["status"] == "wrong" and words in parts[part]["message"], parts[
        part
    ]
    assert rep["score"] < rep["max_score"]
    others = [p for n, p in parts.items() if n != part]
    assert all(p["passed"] for p in others), others  # grading went on: the other parts still score


# ---------------------------------------------------------------- exercise 2
def test_ex2_solution_full_marks(grade):
    rep = grade("ex2 solution", SOL / f"{EX2}.ipynb")
    assert rep["score"] == rep["max_score"] == 10 and all(p["passed"] for p in rep["parts"]), rep["parts"]
    # the hidden held-out set is summarised, never shown
    from instruct_course.data.world import make_splits

    train = make_splits(
        seed=0, n_train=200, n_eval=20, families=["sentiment", "plural", "compare"], heldout_families=()
    )["train"]
    text = json.dumps(rep["parts"])
    assert not any(r["input"] and r["input"] in text or r["instruction"] in text for r in hidden_heldout(train))


def test_ex2_blank_scores_zero(grade):
    rep = grade("ex2 blank", EX / f"{EX2}.ipynb")
    assert rep["score"] == 0 and all(p["status"] == "not_attempted" for p in rep["parts"])


FAST = {"max_steps=200": "max_steps=5"}  # wrong notebooks need not train for real: they break elsewhere
EX2_WRONG = {
    "off_by_one": (
        {
            **FAST,
            'train_examples = [prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"]) for r in train_records]': 'train_examples = [prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"]) for r in train_records]\n'
            'for e in train_examples:\n    k = next(j for j, l in enumerate(e["labels"]) if l != -100)\n    e["labels"][k] = -100',
        },
        "q2",
        "off-by-one",
    ),
    "hard_coded_numbers": (
        {
            **FAST,
            "before = evaluate_exact_match(base, tok, eval_records)": 'before = {"exact_match": 0.25, "per_task": {}, "predictions": []}',
            "after = evaluate_exact_match(sft_model, tok, eval_records)": 'after = {"exact_match": 0.95, "per_task": {}, "predictions": []}',
        },
        "q3",
        "you report before",
    ),
    "infinite_loop": (
        {"sft_model = train_sft_stage(": "while True:\n    pass\nsft_model = train_sft_stage("},
        "q4",
        "timed out",
    ),
    "redefined_check_no_training": (
        {
            'tok = load_tokenizer("tiny")': 'tok = load_tokenizer("tiny")\nfor q in (q1, q2, q3, q4, q5): q.check = lambda *a, **k: print("Correct!")\n'
            'import instruct_course.grading.core as G\nG.Part.grade = lambda self, answers: G.Result(self.name, "correct", "ok", self.points, self.points)',
            "sft_model = train_sft_stage(": "sft_model = load_model('tiny', device='cpu'); sft_model.save_pretrained(SFT_DIR)\n_unused = (lambda *a, **k: None)(",
            "plot_loss(SFT_DIR);": "pass",
        },
        "q4",
        "should improve",
    ),
    "leaky_heldout": (
        {
            **FAST,
            'train_records, eval_records = splits["train"], splits["heldout_instances"]': 'train_records, eval_records = splits["train"], splits["heldout_instances"][:10] + splits["train"][-10:]',
            "assert not {instance_text(r)": "# assert not {instance_text(r)",
        },
        "q1",
        "same instance",
    ),
}


@pytest.mark.parametrize("kind", list(EX2_WRONG))
def test_ex2_wrong_solutions_lose_points(kind, grade, tmp_path):
    subs, part, words = EX2_WRONG[kind]
    rep = grade(f"ex2 {kind}", mutate(SOL / f"{EX2}.ipynb", tmp_path / f"wrong_{kind}.ipynb", subs), timeout_cell=20)
    parts = by_part(rep)
    assert parts[part]["points"] == 0 and parts[part]["status"] == "wrong" and words in parts[part]["message"], parts[
        part
    ]
    assert rep["score"] < rep["max_score"]
    if kind == "hard_coded_numbers":
        assert not parts["q5"]["passed"] and "you report after" in parts["q5"]["message"]
    if kind in ("off_by_one", "leaky_heldout", "hard_coded_numbers"):
        assert not parts["q4"]["passed"]  # 5 steps of SFT learn nothing
    if kind == "infinite_loop":
        assert parts["q1"]["passed"] and parts["q2"]["passed"] and parts["q3"]["passed"]


def test_zz_timings():
    print("\ngrading times (s):", json.dumps(TIMINGS, indent=1))
