"""Exercise 3 (Self-Instruct with SmolLM2) graded end to end in quick mode: the solution scores full marks, the blank
notebook 0, and each wrong or cheating variant loses the points it should: a templated pool and edited outputs (the
replay), a pool from another model, a filter without its blacklist, a prompt without machine tasks, a typed report."""

import pytest
from grading_helpers import EX, SOL, grade_solution_by_cli, report_timings, wrong_variant

EX3 = "03_self_instruct"
RUN = "pool = run_pool(POOL_PATH, TARGET, model, tok, MAX_BATCHES)"
NO_RUN = {RUN: "pool = run_pool(POOL_PATH, TARGET, model, tok, 0)"}  # parts that break before the run need no run
TEMPLATED = """pool, machine = [], []
for b in range(2):  # a pool in the loop's format, prompts and all, whose texts come from a template
    s, seed = {**SETTINGS, "dtype": "float32"}, 1000 * b + 1
    rng = random.Random(seed)
    prompts = [instruction_prompt(SEED_INSTRUCTIONS, machine, rng) for _ in range(BATCH_SIZE)]
    for k, p in enumerate(prompts):
        ins = f"Write a story about the {['sea', 'moon', 'city', 'forest'][k]} in {b + 3} sentences."
        c = candidate(b, k, seed, s, p, {"text": ins, "finish_reason": "stop"})
        c.update(is_classification=False, instance_prompt=f"Task: {ins}\\nInput:", instance_finish="stop")
        c.update(instance_text="<none>\\nOutput: Once upon a time.", input="", output="Once upon a time.")
        now = [x["instruction"] for x in pool if x["status"] == "accepted" and x["batch"] == b]
        c["reason"], c["batch_seconds"] = reject_reason(c, SEED_INSTRUCTIONS + machine + now), 0.0
        c["status"] = "rejected" if c["reason"] else "accepted"
        pool.append(c)
    machine += [x["instruction"] for x in pool if x["batch"] == b and x["status"] == "accepted"]
append_jsonl(pool, POOL_PATH)"""
EDIT = """for r in pool:  # improve the answers by hand after the run
    if r["status"] == "accepted":
        r["instance_text"] = r["instance_text"].replace(r["output"], "Edited: " + r["output"], 1)
        r["output"] = "Edited: " + r["output"]
from instruct_course.core import write_jsonl
write_jsonl(pool, POOL_PATH)
"""
SMOL = 'load_model("smollm2", device="cpu"), load_tokenizer("smollm2")'
SHOW = 'print(Counter(r["reason"] or "accepted" for r in pool))'
WRONG = {  # substitutions, the part that must lose its points, a phrase of its message
    "ex3 templated_pool": ({RUN: TEMPLATED}, "q4", "came out as recorded"),
    "ex3 edited_outputs": ({SHOW: EDIT + SHOW}, "q4", "came out as recorded"),
    "ex3 tiny_model_pool": (
        {SMOL: 'load_model("tiny"), load_tokenizer("tiny")'},
        "q4",
        "",
    ),
    "ex3 no_blacklist": ({**NO_RUN, '    if BLACK_RE.search(ins):\n        return "blacklist"\n': ""}, "q2", "case 5"),
    "ex3 human_only_prompt": (
        {**NO_RUN, "mach = rng.sample(machine, min(n_machine, len(machine)))": "mach = []"},
        "q1",
        "does not show the machine task",
    ),
    "ex3 typed_report": (
        {"print(json.dumps(report, indent=1))": 'report["distinct_leading_verbs"] += 5\nprint(report)'},
        "q5",
        "report['distinct_leading_verbs']",
    ),
}


def test_solution_full_marks(quick):
    grade_solution_by_cli(EX3)
    assert not list(SOL.glob("*.jsonl")), "quick mode must not write next to the notebook"


def test_blank_scores_zero(grade, quick):
    rep = grade(f"{EX3} blank", EX / f"{EX3}.ipynb")
    assert rep["score"] == 0 and all(p["status"] == "not_attempted" for p in rep["parts"]), rep["parts"]


@pytest.mark.parametrize("kind", list(WRONG))
def test_wrong_solutions_lose_points(kind, grade, tmp_path, quick):
    subs, part, words = WRONG[kind]
    rep = wrong_variant(grade, tmp_path, kind, EX3, subs, part, words)
    if kind == "ex3 templated_pool":  # well-formed and consistent with the filters: only the replay can tell
        assert {p["name"] for p in rep["parts"] if not p["passed"]} == {"q4"}, rep["parts"]
    if kind == "ex3 edited_outputs":
        assert next(p for p in rep["parts"] if p["name"] == "q3")["passed"]  # the edit is consistent


def test_zz_timings():
    report_timings()
