"""grading.grader on the warm-up exercise (no model, seconds per run): limits that cannot be beaten (a cell or an
answer that swallows KeyboardInterrupt, inf/nan limits), a kernel crash that keeps earlier parts, bounded output
memory, exit codes (--fail-under) and JSON on stdout in every case."""

import csv
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import nbformat
import pytest

from instruct_course.core import CourseError
from instruct_course.grading.core import QUICK_ENV
from instruct_course.grading.grader import grade_main, grade_notebook
from instruct_course.grading.kernel import INTERRUPT_GRACE, KEEP_OUTPUT

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("OMP_NUM_THREADS", "1")  # kernels inherit it: one thread per process on a shared runner
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
STARTUP = 45  # seconds a kernel may take to start and stop on a loaded machine
Q1 = "# PART: q1\nsquares = [i * i for i in range(1, 11)]"
SWALLOW = "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass"


def warmup_notebook(path: Path, *cells: str) -> Path:
    "A notebook of the warm-up exercise with these code cells."
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c) for c in cells], metadata={"instruct_course": {"exercise": "00_warmup"}}
    )
    nbformat.write(nb, str(path))
    return path


def by_part(rep):
    return {p["name"]: p for p in rep["parts"]}


def run_cli(*args, module="instruct_course.grading.grader", timeout=300):
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
        cwd=ROOT,
    )


# ---------------------------------------------------------------- could not grade: exit 2, JSON under --json
def test_grader_cannot_run(tmp_path, capsys):
    (tmp_path / "text.ipynb").write_text("print('not json')")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), str(tmp_path / "m.ipynb"))
    for path, words in [
        (tmp_path / "missing.ipynb", "no such notebook"),
        (tmp_path / "text.ipynb", "not a Jupyter notebook"),
        (tmp_path / "m.ipynb", "which exercise"),
        (tmp_path / "empty_folder", "no notebooks"),
    ]:
        (tmp_path / "empty_folder").mkdir(exist_ok=True)
        assert grade_main([str(path)]) == 2
        out, err = capsys.readouterr()
        assert words in err and out == "", err
        assert grade_main([str(path), "--json"]) == 2
        out, err = capsys.readouterr()
        assert words in json.loads(out)["error"] and words in err  # always JSON on stdout under --json
    p = run_cli(tmp_path / "missing.ipynb")
    assert p.returncode == 2 and "no such notebook" in p.stderr and p.stdout == ""
    p = run_cli("grade", tmp_path / "missing.ipynb", "--json", module="instruct_course.cli")
    assert p.returncode == 2 and json.loads(p.stdout)["exit_code"] == 2


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--timeout-cell", "inf"),
        ("--timeout-total", "nan"),
        ("--timeout-total", "-inf"),
        ("--timeout-cell", "0"),
        ("--timeout-total", "-5"),
        ("--timeout-cell", "soon"),
    ],
)
def test_limits_refused(flag, value, tmp_path, capsys):
    nb = warmup_notebook(tmp_path / "w.ipynb", Q1)
    assert grade_main([str(nb), f"{flag}={value}", "--json"]) == 2
    out, err = capsys.readouterr()
    assert f"{flag} must be a finite number of seconds" in err
    assert flag in json.loads(out)["error"]
    with pytest.raises(CourseError, match="finite"):
        grade_notebook(nb, **{flag[2:].replace("-", "_"): float(value) if value != "soon" else value})


@pytest.mark.parametrize("flag, value", [("--fail-under", "3"), ("--fail-under", "-1"), ("--fail-under", "nan")])
def test_fail_under_refused(flag, value, tmp_path, capsys):
    nb = warmup_notebook(tmp_path / "w.ipynb", Q1)
    assert grade_main([str(nb), f"{flag}={value}", "--json"]) == 2
    out, err = capsys.readouterr()
    assert "between 0 and 2" in json.loads(out)["error"]


# ---------------------------------------------------------------- limits that cannot be beaten
@pytest.mark.parametrize("which, cell, total", [("cell limit", 3, 120), ("total limit", 300, 20)])
def test_cell_swallowing_interrupt_is_killed(which, cell, total, tmp_path):
    nb = warmup_notebook(tmp_path / "w.ipynb", Q1, f"# PART: q2\ntotal = 385\n{SWALLOW}", "# PART: q3\nx = 1")
    t0 = time.monotonic()
    rep = grade_notebook(nb, timeout_cell=cell, timeout_total=total)
    secs = time.monotonic() - t0
    assert secs < min(cell, total) + INTERRUPT_GRACE + STARTUP, f"{which}: took {secs:.0f} s"
    parts = by_part(rep)
    assert parts["q1"]["passed"], parts  # read before the bad cell
    assert not parts["q2"]["passed"] and "ignored the interrupt" in parts["q2"]["message"], parts["q2"]
    assert rep["cells"][2]["status"] == "not_run" and "stopped" in rep["cells"][2]["error"]


def test_answer_reading_counts_against_the_total(tmp_path):
    slow = "class Slow:\n    def tolist(self):\n" + "\n".join("        " + x for x in SWALLOW.split("\n"))
    nb = warmup_notebook(tmp_path / "w.ipynb", f"# PART: q1\n{slow}\nsquares = Slow()", "# PART: q2\ntotal = 385")
    t0 = time.monotonic()
    rep = grade_notebook(nb, timeout_cell=300, timeout_total=15)
    secs = time.monotonic() - t0
    assert secs < 15 + INTERRUPT_GRACE + STARTUP, f"took {secs:.0f} s"
    q1 = by_part(rep)["q1"]
    assert not q1["passed"] and "reading its answers timed out" in q1["message"], q1


def test_kernel_crash_keeps_earlier_parts(tmp_path):
    nb = warmup_notebook(tmp_path / "w.ipynb", Q1, "# PART: q2\nimport os\nos._exit(1)")
    rep = grade_notebook(nb, timeout_cell=60, timeout_total=120)
    parts = by_part(rep)
    assert parts["q1"]["passed"] and rep["score"] == 1, parts
    assert "crashed the kernel" in parts["q2"]["message"] and rep["cells"][1]["status"] == "dead"


def test_output_memory_is_bounded(tmp_path):
    big = "# PART: q2\nimport sys\nfor _ in range(30):\n    print('x' * 1_000_000)\n    sys.stdout.flush()\ntotal = 385"
    nb = warmup_notebook(tmp_path / "w.ipynb", Q1, big)
    tracemalloc.start()
    try:
        rep = grade_notebook(nb, timeout_cell=120, timeout_total=240)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rep["score"] == 2 and len(rep["cells"][1]["output"]) == KEEP_OUTPUT
    assert peak < 20e6, f"the grader held {peak / 1e6:.0f} MB for 30 MB of output"


# ---------------------------------------------------------------- exit codes and output
def test_fail_under_exit_codes_and_json(tmp_path, capsys):
    nb = warmup_notebook(tmp_path / "w.ipynb", Q1, "q1.check()", "# PART: q2\ntotal = 384")  # scores 1 of 2
    assert grade_main([str(nb), "--json", "--fail-under", "2", "--timeout-total", "120"]) == 1
    out, err = capsys.readouterr()
    rep = json.loads(out)
    assert rep["score"] == 1 and rep["max_score"] == 2 and "below --fail-under 2" in err
    assert "cell 1/2 [q1]: ok" in err  # progress on stderr; the check cell is dropped
    assert grade_main([str(nb), "--fail-under", "1", "--timeout-total", "120"]) == 0
    out, _ = capsys.readouterr()
    assert "score: 1/2" in out


# ---------------------------------------------------------------- class mode and quick mode
def test_class_mode_csv_and_exit_codes(tmp_path, capsys):
    "A folder: every notebook graded, one row each; a notebook that cannot be graded gets a row and exit code 2."
    (tmp_path / "class").mkdir()
    warmup_notebook(tmp_path / "class" / "ann.ipynb", Q1, "# PART: q2\ntotal = 385")
    warmup_notebook(tmp_path / "class" / "bob.ipynb", Q1, "# PART: q2\ntotal = 384")
    csv_path = tmp_path / "scores.csv"
    args = [str(tmp_path / "class"), "--csv", str(csv_path), "--timeout-total", "120"]
    assert grade_main([*args, "--fail-under", "2"]) == 1  # bob is below
    out, _ = capsys.readouterr()
    rows = list(csv.DictReader(open(csv_path)))
    assert [(r["file"].rsplit("/", 1)[-1], r["score"], r["max"], r["status"]) for r in rows] == [
        ("ann.ipynb", "2", "2", "graded"),
        ("bob.ipynb", "1", "2", "below --fail-under 2"),
    ]
    assert list(rows[0]) == ["file", "exercise", "score", "max", "status"] and "bob.ipynb: 1/2" in out
    (tmp_path / "class" / "carl.ipynb").write_text("not a notebook")
    assert grade_main([*args, "--json"]) == 2
    out, _ = capsys.readouterr()
    rep = json.loads(out)
    assert [r["status"][:6] for r in rep["rows"]] == ["graded", "graded", "error:"]
    assert "not a Jupyter notebook" in rep["reports"][2]["error"] and rep["reports"][0]["score"] == 2


def test_quick_flag_lasts_for_the_command(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(QUICK_ENV, raising=False)
    nb = warmup_notebook(tmp_path / "w.ipynb", f"{Q1}\nimport os\nmode = os.environ.get('{QUICK_ENV}')")
    assert grade_main([str(nb), "--json", "--quick", "--timeout-total", "120"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["mode"] == "quick" and QUICK_ENV not in os.environ
