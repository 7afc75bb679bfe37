"""README.md agrees with the results files: it is what `make readme` writes from nbs/index.ipynb and results/*.json
(`instruct_course.site`, nbs/92_site.ipynb), and each results file is read by a finding that names its command."""

import json
import re
import shutil
from pathlib import Path

from instruct_course.site import (
    FINDINGS,
    README_HEADER,
    load_results,
    readme_diff,
    render_findings,
    result_value,
    template_refs,
    used_results,
)

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_what_make_readme_writes():
    diff = readme_diff(ROOT)
    assert not diff, (
        "README.md disagrees with nbs/index.ipynb and results/*.json; edit those (not README.md), run `make readme` "
        "and commit README.md:\n" + diff
    )


def test_every_results_file_is_read_by_a_finding():
    results = load_results(ROOT / "results")
    unused = sorted(set(results) - used_results((ROOT / FINDINGS).read_text()))
    assert not unused, (
        f"results files that no line of {FINDINGS} reads: {', '.join(unused)} (add a finding or remove them)"
    )


def test_the_findings_render_and_name_their_commands():
    section = render_findings((ROOT / FINDINGS).read_text(), load_results(ROOT / "results"))
    assert "{{" not in section
    for name in used_results((ROOT / FINDINGS).read_text()):
        assert f"> results/{name}.json" in section


def _a_number(template: str, results: dict):
    "The first `{{ref}}` of the template whose value is a number (not a bool)."
    for ref in template_refs(template):
        v = result_value(results, ref)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return ref
    return None


def test_a_changed_number_puts_the_readme_out_of_step(tmp_path):
    "The check can fail: in a copy of the checkout, change one number the README quotes."
    for f in [
        "settings.ini",
        "README.md",
        "nbs/index.ipynb",
        FINDINGS,
        *[p.relative_to(ROOT) for p in (ROOT / "results").glob("*.json")],
    ]:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f, tmp_path / f)
    assert (tmp_path / "README.md").read_text().startswith(README_HEADER)
    assert readme_diff(tmp_path) == ""
    results = load_results(tmp_path / "results")
    ref = _a_number((ROOT / FINDINGS).read_text(), results)
    assert ref, f"{FINDINGS} quotes no number"
    name, *keys = [k.strip() for k in ref.split(".")]
    obj = results[name]
    for k in keys[:-1]:
        obj = obj[int(k)] if isinstance(obj, list) else obj[k]
    last = int(keys[-1]) if isinstance(obj, list) else keys[-1]
    obj[last] = obj[last] * 7 + 12345
    (tmp_path / "results" / f"{name}.json").write_text(json.dumps(results[name]))
    assert readme_diff(tmp_path), f"changing {ref} in results/{name}.json left README.md in step"


def model_facts_quoted(text: str) -> dict:
    "The shipped base model's size and vocabulary as the README states them (None where it does not)."
    params = re.search(r"\(([\d,]+) parameters", text)
    vocab = re.search(r"with a ([\d,]+)-token byte-level", text)
    return {
        "parameters": int(params.group(1).replace(",", "")) if params else None,
        "vocabulary": int(vocab.group(1).replace(",", "")) if vocab else None,
    }


def test_the_readme_states_the_shipped_models_real_size():
    "The parameter count and vocabulary size in the README are the shipped `tiny` model's, read from it."
    from instruct_course.models import load_model, load_tokenizer

    quoted = model_facts_quoted((ROOT / "README.md").read_text())
    real = {"parameters": load_model("tiny", device="cpu").num_parameters(), "vocabulary": len(load_tokenizer("tiny"))}
    assert quoted == real, f"README.md says {quoted}, the shipped model has {real}: edit nbs/index.ipynb, make readme"
    wrong = (ROOT / "README.md").read_text().replace(f"{real['vocabulary']:,}-token", "2,048-token")
    assert model_facts_quoted(wrong)["vocabulary"] == 2048 != real["vocabulary"]
