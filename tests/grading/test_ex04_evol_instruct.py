"""Exercise 4 (Evol-Instruct with SmolLM2) graded end to end in quick mode: the solution scores full marks, the blank
notebook 0, and each wrong or cheating variant loses the points it should: an elimination that keeps everything, a
dataset with broken lineage, a templated dataset with a perfect lineage (only the replay can tell), a typed table."""

import pytest
from grading_helpers import EX, by_part, grade_solution_by_cli, report_timings, wrong_variant

EX4 = "04_evol_instruct"
ROUNDS = "N_SEEDS, KEEP_PER_SEED, MAX_ROUNDS = (2, 1, 5)"
NO_ROUNDS = {ROUNDS: "N_SEEDS, KEEP_PER_SEED, MAX_ROUNDS = (2, 1, 0)"}
SHOW = 'print(Counter((r["level"], r["status"]) for r in records))'
BREAK = """for r in records:  # every level-3 item claims its seed as its parent
    if r["level"] == 3:
        r["parent_id"] = f"s{r['seed_id']}"
write_jsonl(records, EVOL_PATH)
"""
TEMPLATED = """records = list(level0)  # three levels written from a template, with a perfect lineage
for lv in (1, 2, 3):
    for i in range(len(SEEDS)):
        parent = next(r for r in records if r["seed_id"] == i and r["level"] == lv - 1)
        text = f"{parent['instruction']} Then explain it to a child in {lv + 2} short sentences, with one example."
        op = "add_constraints" if lv % 2 else "breadth"
        r = new_record(f"r{lv}-{i}", i, parent, lv, lv, op, text, "stop", (1000 + lv, 2000 + lv))
        r["response"], r["response_finish"] = f"Here is a clear answer in {lv + 2} sentences for a child.", "stop"
        records.append(r)
write_jsonl(records, EVOL_PATH)
"""
WRONG = {  # substitutions, the part that must lose its points, a phrase of its message
    "ex4 keeps_everything": (
        {**NO_ROUNDS, '    if finish_reason == "length":\n        return "truncated"\n': "    return None\n"},
        "q1",
        "case 1 (cut off",
    ),
    "ex4 broken_lineage": ({SHOW: BREAK + SHOW}, "q2", "but its parent s"),
    "ex4 templated_dataset": ({**NO_ROUNDS, SHOW: TEMPLATED + SHOW}, "q4", "came out as recorded"),
    "ex4 typed_table": (
        {"for lv, row in difficulty.items():": 'difficulty[3]["words"] += 2\nfor lv, row in difficulty.items():'},
        "q5",
        "difficulty['3']['words']",
    ),
}


def test_solution_full_marks(quick):
    grade_solution_by_cli(EX4)


def test_blank_scores_zero(grade, quick):
    rep = grade(f"{EX4} blank", EX / f"{EX4}.ipynb")
    assert rep["score"] == 0 and all(p["status"] == "not_attempted" for p in rep["parts"]), rep["parts"]


@pytest.mark.parametrize("kind", list(WRONG))
def test_wrong_solutions_lose_points(kind, grade, tmp_path, quick):
    subs, part, words = WRONG[kind]
    rep = wrong_variant(grade, tmp_path, kind, EX4, subs, part, words)
    if kind == "ex4 templated_dataset":  # lineage, elimination and measures are all consistent
        assert {p["name"] for p in rep["parts"] if not p["passed"]} == {"q4"}, rep["parts"]
    if kind == "ex4 typed_table":
        assert by_part(rep)["q2"]["passed"] and by_part(rep)["q4"]["passed"]


def test_zz_timings():
    report_timings()
