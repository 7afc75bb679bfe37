"""Exercise 5 (multi-task vs single-task) graded end to end in quick mode: the solution scores full marks, the blank
notebook 0, and each wrong or cheating variant loses the points it should: models trained on other families than
declared, declared sets of the wrong families, copied models, typed results, claims the numbers do not support."""

import pytest
from grading_helpers import EX, by_part, grade_solution_by_cli, report_timings, wrong_variant

EX5 = "05_multitask"
ROTATE = '{"sentiment": "translate", "translate": "uppercase", "uppercase": "sentiment"}'
TRAIN = 'models[name] = train_sft_stage(load_model("tiny", device="cpu"), records, tok,'
WITH = "    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its log\n"
SETS = (
    'train_sets = {"multi": data["train"], **{f: [r for r in data["train"] if r["task"] == f] for f in TRAIN_FAMILIES}}'
)
COPY = (  # no training: the shipped SFT model saved in each folder
    "    models[name] = load_model('tiny-sft', device='cpu')\n    models[name].save_pretrained(MODEL_DIRS[name])\n"
    "    _unused = (lambda *a, **k: None)(load_model, records, tok,"
)
FLIP = 'claims["seen_templates"] = "single" if claims["seen_templates"] != "single" else "multi"\n'
WRONG = {  # substitutions, the part that must lose its points, a phrase of its message
    "ex5 trained_on_other_families": (  # each single-task model is trained on another family's records
        {TRAIN: TRAIN.replace("records, tok,", f"train_sets[{ROTATE}.get(name, name)], tok,")},
        "q2",
        "data fingerprint",
    ),
    "ex5 declared_other_families": (  # the declared single-task sets are another family's: declared = trained
        {SETS: SETS + f"\ntrain_sets = {{k: train_sets[{ROTATE}.get(k, k)] for k in train_sets}}"},
        "q2",
        "no better than a model tuned on another family",
    ),
    "ex5 copied_tiny_sft": ({WITH + "        " + TRAIN: COPY}, "q2", "has no course_run.json"),
    "ex5 typed_results": (
        {"import pandas as pd": 'results["multi"]["unseen_rouge_l"] += 0.2\nimport pandas as pd'},
        "q3",
        "re-measured on your eval_sets",
    ),
    "ex5 unsupported_claims": ({"print(claims)": FLIP + "print(claims)"}, "q4", "claims['seen_templates']"),
    "ex5 training_templates_as_heldout": (
        {
            '"seen_templates": data["seen_templates"]': '"seen_templates": data["seen_instances"]',
            "(20, 40, 10) if QUICK": "(2, 40, 10) if QUICK",
        },
        "q1",
        "a training template",
    ),
}


def test_solution_full_marks(quick):
    grade_solution_by_cli(EX5)


def test_blank_scores_zero(grade, quick):
    rep = grade(f"{EX5} blank", EX / f"{EX5}.ipynb")
    assert rep["score"] == 0 and all(p["status"] == "not_attempted" for p in rep["parts"]), rep["parts"]


@pytest.mark.parametrize("kind", list(WRONG))
def test_wrong_solutions_lose_points(kind, grade, tmp_path, quick):
    subs, part, words = WRONG[kind]
    rep = wrong_variant(grade, tmp_path, kind, EX5, subs, part, words)
    if kind in ("ex5 typed_results", "ex5 unsupported_claims"):
        assert by_part(rep)["q1"]["passed"] and by_part(rep)["q2"]["passed"], rep["parts"]


def test_zz_timings():
    report_timings()
