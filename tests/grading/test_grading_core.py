"""grading.core: the check API (three outcomes, quiet checks), the exercise registry, solutions read from
exercises/solutions/ (never from the package), and learner notebooks generated from the solutions."""

import json
import re
from pathlib import Path

import nbformat
import pytest

from instruct_course.core import CourseError
from instruct_course.grading import core as G
from instruct_course.grading.core import (
    BEGIN,
    END,
    EXERCISE_MODULES,
    STUB,
    Answers,
    cell_part,
    is_check_cell,
    load_exercise,
    make_student_notebook,
    reference_solution,
    solution_regions,
)

ROOT = Path(__file__).resolve().parents[2]
EX, SOL = ROOT / "exercises", ROOT / "exercises" / "solutions"
EX1, EX2 = "01_instruction_dataset", "02_sft_before_after"
ALL = [EX1, EX2, "03_self_instruct", "04_evol_instruct", "05_multitask"]
CHECK_ONLY = {"03_self_instruct": {"q4"}, "04_evol_instruct": {"q3", "q4"}}  # parts with no code of their own


@pytest.mark.parametrize("name", ALL)
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
    # every part has a solution region (and a stub), but those that only check what earlier parts made
    assert parts == {p.name for p in load_exercise(name).parts} - CHECK_ONLY.get(name, set())
    assert "Time." in b.cells[0].source  # the measured time is stated at the top
    assert sum(STUB in c.source for c in b.cells) == len(parts)


def test_solution_lookup_and_check_cells(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(EX)  # where a learner's notebook runs
    assert "prepare_instruction_data" in reference_solution(EX1, "q3")
    assert "train_sft_stage" in reference_solution(EX2, "q4")
    load_exercise(EX1).part("q3").solution()
    assert "prepare_instruction_data" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)  # also from elsewhere, in a source checkout
    assert "train_sft_stage" in reference_solution(EX2, "q4")
    assert reference_solution("99_none", "q1") is None
    assert is_check_cell("q1.check()") and is_check_cell("# q1.hint()\n# q1.solution()")
    assert not is_check_cell("x = 1\nq1.check()")
    assert cell_part("# PART: q2\nx = 1") == "q2" and cell_part("x = 1") is None


def test_no_solution_text_in_the_package():
    "The solutions live only in exercises/solutions/: no line of a solution region is in a grading module."
    sources = "\n".join(p.read_text() for p in (ROOT / "instruct_course" / "grading").glob("*.py"))
    assert "solution_text" not in sources and "_SOL_" not in sources
    for f in SOL.glob("*.ipynb"):
        nb = nbformat.read(str(f), as_version=4)
        for c in nb.cells:
            for region in solution_regions(c.source) if c.cell_type == "code" else []:
                for line in region.splitlines():
                    if len(line.strip()) > 30:
                        assert line.strip() not in sources, f"{f.name}: {line.strip()!r} is in the package"


def test_registry_modules():
    "Each exercise is a module grading.exNN defining EXERCISE; unknown names and missing modules are named."
    for ex_id, module in EXERCISE_MODULES.items():
        assert re.fullmatch(r"ex\d\d", module) and module[2:] == ex_id[:2]
        ex = load_exercise(ex_id[:2])
        assert ex.id == ex_id and ex is load_exercise(ex_id) and all(p.exercise == ex_id for p in ex.parts)
    with pytest.raises(CourseError, match="valid: .*01_instruction_dataset"):
        load_exercise("07")


def test_missing_exercise_module(monkeypatch):
    monkeypatch.setitem(G.EXERCISE_MODULES, "07_future", "ex07")
    with pytest.raises(CourseError, match=r"'07_future'.*instruct_course\.grading\.ex07.*cannot be loaded"):
        load_exercise("07")


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
