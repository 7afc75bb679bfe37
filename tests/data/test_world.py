"The task world: determinism, splits that never leak, pretraining text, scoring."

import hashlib
import json
import random

import pytest

from instruct_course.core import CourseError
from instruct_course.data.world import (
    DEFAULT_HELDOUT_FAMILIES,
    FAMILIES,
    SPLITS,
    eval_keys,
    get_family,
    instance_text,
    list_families,
    make_splits,
    pretraining_text,
    render_record,
    score_response,
)


def test_world_is_deterministic_per_seed():
    a, b, c = (
        make_splits(seed=7, n_train=30, n_eval=5),
        make_splits(seed=7, n_train=30, n_eval=5),
        make_splits(seed=8, n_train=30, n_eval=5),
    )
    assert a == b and a != c
    assert (
        pretraining_text(seed=1, n_docs=50)
        == pretraining_text(seed=1, n_docs=50)
        != pretraining_text(seed=2, n_docs=50)
    )


def test_world_size_and_clusters():
    assert len(FAMILIES) >= 10 and len({f.cluster for f in FAMILIES.values()}) >= 5
    for f in FAMILIES.values():
        assert len(f.templates) >= 3 and len(f.heldout_templates) >= 1, f.name
        assert not {t.id for t in f.templates} & {t.id for t in f.heldout_templates}
    assert [r["name"] for r in list_families()] == list(FAMILIES)


def test_splits_share_no_instance(splits):
    sets = {s: {instance_text(r) for r in splits[s]} for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not sets[a] & sets[b], (a, b)


def test_instance_identity_ignores_template():
    # the check above must be able to fail: the same instance under two templates has one identity
    fam = FAMILIES["topic"]
    inst = fam.make(random.Random(3))
    ids = {instance_text(render_record(fam, inst, t.id)) for t in fam.templates + fam.heldout_templates}
    assert len(ids) == 1
    other = fam.make(random.Random(4))
    assert instance_text(render_record(fam, other, fam.templates[0].id)) not in ids


def test_heldout_templates_and_families_never_in_train(splits):
    held_tpl = {t.id for f in FAMILIES.values() for t in f.heldout_templates}
    assert not {r["template_id"] for r in splits["train"]} & held_tpl
    assert {r["template_id"] for r in splits["heldout_templates"]} <= held_tpl
    assert not {r["task"] for r in splits["train"] + splits["heldout_instances"] + splits["heldout_templates"]} & set(
        DEFAULT_HELDOUT_FAMILIES
    )
    assert {r["task"] for r in splits["heldout_families"]} == set(DEFAULT_HELDOUT_FAMILIES)


def test_pretraining_text_excludes_eval_instances_and_instruction_format(splits):
    docs = pretraining_text(seed=0, n_docs=3000, exclude=eval_keys(splits))
    text = "\n".join(docs)
    for marker in ("Instruction:", "Response:", "OPTIONS", "step by step"):
        assert marker not in text
    fr = [r for r in splits["heldout_instances"] if r["task"] == "translate"]
    assert fr and not [r for r in fr if f'"{r["response"]}"' in text]
    # plurals have few distinct instances: without the exclusion most eval ones appear (so the check can fail)
    pl = [r for r in splits["heldout_instances"] + splits["heldout_templates"] if r["task"] == "plural"]
    phrase = lambda r: f"many {r['response'][4:]}."
    assert pl and not [r for r in pl if phrase(r) in text]
    unfiltered = "\n".join(pretraining_text(seed=0, n_docs=3000))
    assert sum(phrase(r) in unfiltered for r in pl) > len(pl) // 2


def test_scoring():
    ref = FAMILIES["arithmetic"].make.__globals__["_add_steps"](47, 38)
    assert score_response("arithmetic", ref, ref) == 1.0
    assert score_response("arithmetic", ref.replace("85", "86"), ref) == 0.0
    assert score_response("arithmetic", "85", ref) == 0.0  # no final-answer line, no credit
    assert score_response("sentiment", "positive ", "positive") == 1.0
    assert score_response("sentiment", "negative", "positive") == 0.0
    with pytest.raises(CourseError, match="valid families"):
        get_family("poetry")


def test_world_is_byte_identical_to_the_shipped_one(splits):
    "The tiny model was pretrained and tuned on this world: a change to any generator or template shows up here."
    digest = lambda obj: hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
    assert digest(splits) == "04a5d382dd0bf10113806b1415befd77f3cb839c18ffd44d2ab25716c4c531a8"
    assert digest(pretraining_text(seed=0, n_docs=300)) == (
        "c2abb24d8068854aa3a35706f88e29369f99497e449a6f521bb1d8113ac56228"
    )


def test_bad_split_arguments_and_records():
    with pytest.raises(CourseError, match="not among families"):
        make_splits(families=["qa"], heldout_families=["plural"])
    with pytest.raises(CourseError, match=">= 0"):
        make_splits(n_train=-1)
    rec = render_record("qa", FAMILIES["qa"].make(random.Random(0)), "qa_read")
    with pytest.raises(CourseError, match="does not match its template"):
        instance_text({**rec, "template_id": "qa_flan"})
    with pytest.raises(CourseError, match="valid: "):
        FAMILIES["qa"].template("qa_nope")
