"""Evol-Instruct: elimination rules, score parsing, config, pruning bias, levels and returned instructions (a scripted
generator stands in for the LM)."""

import random
from collections import Counter

import pytest

from instruct_course.core import CourseError, make_config
from instruct_course.datagen.evol_difficulty import difficulty_by_level
from instruct_course.datagen.evol_instruct import (
    ELIMINATION_REASONS,
    EVOLUTION_OPS,
    TUTORIAL_EVOLUTION_PROMPTS,
    EvolInstructConfig,
    EvolInstructGenerator,
    evolution_jobs,
    evolution_prompt,
    instruction_elimination,
    next_pool,
    prune,
    response_elimination,
    simulate_pruning,
)
from instruct_course.experiments.datagen import pruning_comparison
from instruct_course.metrics import parse_grade


def parse_score(reply):
    "Evol-Instruct's difficulty score: a 1-10 grade the reply starts with (it may go on)."
    return parse_grade(reply, 10, exact=False)


P = "Write a haiku about autumn."


@pytest.mark.parametrize(
    "evolved,finish,reason",
    [
        ("Write a haiku about autumn that mentions a red maple leaf and the first frost.", "stop", None),
        ("Write a haiku about autumn.", "stop", "no_information_gain"),
        ("write a haiku about AUTUMN!!", "stop", "no_information_gain"),
        ("Write a haiku about autumn, please.", "stop", "no_information_gain"),
        ("Write a haiku about autumn leaves", "stop", "no_information_gain"),  # ROUGE-L 0.91: near-identical
        ("Write a haiku about autumn leaves in the rain", "stop", None),  # ROUGE-L 0.77: a real change
        ("#Rewritten Prompt#: Write a haiku about autumn rain at night.", "stop", "copied_markers"),
        ("Rewrite the given prompt to be about winter and snow.", "stop", "copied_markers"),
        ("", "stop", "empty"),
        ("...", "stop", "empty"),
        ("Write a haiku about autumn that", "length", "truncated"),
    ],
)
def test_instruction_elimination(evolved, finish, reason):
    assert instruction_elimination(P, evolved, finish) == reason


@pytest.mark.parametrize(
    "response,reason",
    [
        ("I'm sorry, but I can't do that.", "sorry"),
        ("I apologize, this is not possible.", "sorry"),
        ("As an AI, I have no opinion.", "sorry"),
        ("Sorry " + "leaf " * 90, None),  # long answers are kept even if they apologise
        ("It is what it is.", "stopwords_only"),
        ("!!! ...", "stopwords_only"),
        ("", "stopwords_only"),
        ("Red leaves drift down / the maple lets go at last / cold wind carries them", None),
        ("The answer is 42.", None),
    ],
)
def test_response_elimination(response, reason):
    assert response_elimination(response) == reason


def test_parse_score_never_guesses():
    assert (
        parse_score("7") == 7
        and parse_score("Difficulty: 3/10") == 3
        and parse_score("10") == 10
        and parse_score("6.") == 6
    )
    assert parse_score("8 out of 10") == 8
    for bad in ["", "hard", "eleven", "0", "11", "-3", "100", "1. Table", "I think 7", "Difficulty ("]:
        assert parse_score(bad) is None, bad


def test_prune_and_bias():
    rng = random.Random(0)
    c = list("abcdef")
    assert prune(c, 2, "first", rng) == ["a", "b"]
    s = prune(c, 2, "sample", rng)
    assert len(s) == 2 and set(s) <= set(c)
    with pytest.raises(CourseError):
        prune(c, 2, "best", rng)
    first, sample = simulate_pruning(strategy="first"), simulate_pruning(strategy="sample")
    assert set(first) == set(list(EVOLUTION_OPS)[:2])
    assert set(sample) == set(EVOLUTION_OPS)
    assert sum(first.values()) == sum(sample.values()) == 50 * 3 * 2


def test_prompts():
    assert set(TUTORIAL_EVOLUTION_PROMPTS) == {"deepen", "widen", "concretize", "reasoning"}
    assert {d for d, *_ in EVOLUTION_OPS.values()} == {"in-depth", "in-breadth"}
    assert sum(d == "in-depth" for d, *_ in EVOLUTION_OPS.values()) == 5
    for op in EVOLUTION_OPS:
        assert "{instruction}" in evolution_prompt(op)
    with pytest.raises(CourseError):
        evolution_prompt("widen")


class ScriptedGen:
    """Evolution prompts: appends a constraint, except 'deepening' echoes the parent (no gain) and 'breadth' copies a
    marker. Other prompts: an answer."""

    has_chat_template = True

    def __init__(self):
        self.stats = {}

    def __call__(self, prompts, seed=None, **kw):
        out = []
        for p in prompts:
            if "#Given Prompt#:" in p:
                parent = p.split("#Given Prompt#: ")[-1].split("\n")[0]
                if "in more depth" in p:
                    t = parent
                elif "brand new task" in p:
                    t = "#Created Prompt#: " + parent
                elif "explicit steps" in p:
                    t = parent + " Then explain step 2 carefully."
                else:
                    t = parent + f" It must use at most {len(parent) % 50 + 3} words."
                out.append({"text": t, "finish_reason": "stop", "new_tokens": 5})
            elif p.startswith("Rate how difficult"):
                out.append({"text": "7" if "must" in p else "maybe", "finish_reason": "stop", "new_tokens": 1})
            else:
                out.append(
                    {
                        "text": "Sorry, I cannot." if "step 2" in p else "Here is a careful answer with content.",
                        "finish_reason": "stop",
                        "new_tokens": 5,
                    }
                )
        return out


def scripted(**kw):
    g = EvolInstructGenerator(None, None, seed=1, progress=False, **kw)
    g.gen = ScriptedGen()
    return g


def test_generate_dataset_levels_elimination_and_returns():
    g = scripted(ops=["deepening", "add_constraints", "breadth", "increase_reasoning"])
    seeds = ["Write a haiku about autumn.", "Name three rivers in Europe."]
    recs = g.generate_dataset(seeds, num_evolutions=3, evolution_factor=1)
    reasons = Counter(r["reason"] for r in recs if r["status"] == "eliminated")
    assert reasons["no_information_gain"] > 0 and reasons["copied_markers"] > 0 and reasons["sorry"] > 0
    assert set(reasons) <= set(ELIMINATION_REASONS)
    kept = [r for r in recs if r["status"] == "kept"]
    assert kept and all(r["evolution_type"] == "add_constraints" for r in kept)
    by_id = {r["id"]: r for r in recs}
    for r in recs:
        assert r["tutorial_level"] == r["round"] - 1
        if r["parent_id"].startswith("s"):
            assert r["level"] == 1
        else:
            assert by_id[r["parent_id"]]["status"] == "kept" and r["level"] == by_id[r["parent_id"]]["level"] + 1
    assert max(r["level"] for r in kept) == 3
    assert sum(g.counts[k] for k in ["kept"] + ELIMINATION_REASONS) == len(recs)


def test_failed_instructions_return_to_the_pool():
    g = scripted(ops=["deepening", "breadth"])  # every evolution fails
    recs = g.generate_dataset(["Write a haiku about autumn."], num_evolutions=3, evolution_factor=2)
    assert len(recs) == 6 and all(r["status"] == "eliminated" for r in recs)
    assert all(
        r["parent_id"] == "s0" and r["level"] == 1 for r in recs
    )  # the seed is tried again each round, level stays 1
    assert [r["round"] for r in recs] == [1, 1, 2, 2, 3, 3]
    assert g.counts["returned_to_pool"] == 3


def test_pruning_strategies_select_differently():
    ops = ["add_constraints", "concretizing", "complicate_input"]  # all succeed in the scripted generator
    first = scripted(ops=ops).generate_dataset(
        ["Write a haiku about autumn."] * 8, num_evolutions=2, evolution_factor=1, prune_strategy="first"
    )
    assert {r["evolution_type"] for r in first if r["selected"]} == {"add_constraints"}
    samp = scripted(ops=ops).generate_dataset(
        ["Write a haiku about autumn."] * 8, num_evolutions=2, evolution_factor=1, prune_strategy="sample"
    )
    assert len({r["evolution_type"] for r in samp if r["selected"]}) >= 2
    comp = pruning_comparison(samp, evolution_factor=1)
    assert (
        set(comp["first"]) == {"add_constraints"} and sum(comp["first"].values()) == sum(comp["sample"].values()) == 8
    )


def test_difficulty_counts_unparseable():
    g = scripted(ops=["add_constraints"])
    seeds = ["Write a haiku about autumn.", "Name three rivers."]
    recs = g.generate_dataset(seeds, num_evolutions=2, evolution_factor=1)
    d = difficulty_by_level(recs, seeds, judge=g.judge)
    assert d[0]["unparseable"] == 2 and d[0]["judge"] == [] and d[0]["mean_judge"] is None
    assert d[1]["judge"] == [7, 7] and d[2]["mean_constraints"] > d[1]["mean_constraints"] > d[0]["mean_constraints"]
    assert all(len(x["judge"]) + x["unparseable"] == x["n"] for x in d.values())


def test_bad_input():
    g = scripted()
    for bad in [[], [""], ["ok", 3]]:
        with pytest.raises(CourseError):
            g.generate_dataset(bad)
    with pytest.raises(CourseError):
        g.generate_dataset(["x y z"], num_evolutions=0)
    with pytest.raises(CourseError):
        g.generate_dataset(["x y z"], ops_per_instruction=99)
    with pytest.raises(CourseError):
        g.evolve("x", "widen")
    with pytest.raises(CourseError):
        EvolInstructGenerator(None, None, ops=["nope"])


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "bad,field",
    [
        (dict(ops=["widen"]), "ops"),
        (dict(ops=["breadth", "breadth"]), "ops"),
        (dict(num_evolutions=0), "num_evolutions"),
        (dict(evolution_factor=1.5), "evolution_factor"),
        (dict(ops_per_instruction=0), "ops_per_instruction"),
        (dict(ops=["breadth"], ops_per_instruction=2), "ops_per_instruction"),
        (dict(prune_strategy="best"), "prune_strategy"),
        (dict(near_duplicate=0.0), "near_duplicate"),
        (dict(near_duplicate=1.1), "near_duplicate"),
        (dict(sorry_max_words=0), "sorry_max_words"),
        (dict(evolution_tokens=0), "evolution_tokens"),
        (dict(seed=-1), "seed"),
        (dict(top_p=1.5), "top_p"),
        (dict(temperature=-1.0), "temperature"),
    ],
)
def test_evol_config_validates_itself(bad, field):
    with pytest.raises(CourseError, match=field):
        EvolInstructConfig(**bad)


def test_evol_config_defaults_and_overrides():
    c = EvolInstructConfig()
    assert c.ops == tuple(EVOLUTION_OPS) and (c.num_evolutions, c.evolution_factor) == (3, 2)  # the tutorial's
    assert (c.sorry_max_words, c.prune_strategy, c.ops_per_instruction) == (80, "sample", None)
    assert EvolInstructConfig(ops=["breadth"]).ops == ("breadth",) and EvolInstructConfig(ops=None).ops == c.ops
    with pytest.raises(
        CourseError, match=r"unknown EvolInstructConfig setting\(s\): 'rounds'.*Valid: .*num_evolutions"
    ):
        make_config(EvolInstructConfig, rounds=2)
    with pytest.raises(CourseError, match="evolution_token"):
        EvolInstructGenerator(None, None, evolution_token=8)  # a typo is refused, not ignored
    g = scripted(ops=["add_constraints"], num_evolutions=1, evolution_factor=1)
    assert [r["round"] for r in g.generate_dataset(["Write a haiku about autumn."])] == [1]  # the config's rounds
    assert max(r["round"] for r in g.generate_dataset(["Write a haiku."], num_evolutions=2)) == 2  # a call's override
    assert g.cfg.num_evolutions == 1  # ... for that call only


def test_thresholds_come_from_the_config():
    g = scripted(ops=["add_constraints"], near_duplicate=0.5)  # 'parent + a constraint' is now too close to the parent
    recs = g.generate_dataset(["Write a haiku about autumn in the old forest."], num_evolutions=1)
    assert {r["reason"] for r in recs} == {"no_information_gain"}
    assert response_elimination("Sorry, " + "word " * 20, max_words=10) is None
    assert response_elimination("Sorry, " + "word " * 20) == "sorry"


def test_round_helpers():
    cur = {0: [{"instruction": "Write a haiku.", "level": 0, "id": "s0"}]}
    assert [op for *_, op in evolution_jobs(cur, ["a", "b"], 2, random.Random(0))] == ["a", "b"]
    assert len(evolution_jobs(cur, ["a", "b", "c"], 1, random.Random(0))) == 1
    kept = {"id": "r0-0", "seed_id": 0, "parent_id": "s0", "status": "kept", "selected": False}
    counts = Counter()
    assert next_pool(cur, [kept], 2, "sample", random.Random(0), counts) == {0: [kept]} and kept["selected"]
    failed = {**kept, "status": "eliminated", "selected": False}
    assert next_pool(cur, [failed], 2, "sample", random.Random(0), counts) == cur and counts["returned_to_pool"] == 1
