"""Evol-Instruct's difficulty measures: the constraint count, the judge (a scripted generator stands in for the LM)
and the per-level table."""

import pytest

from instruct_course.core import CourseError
from instruct_course.datagen.evol_difficulty import (
    JUDGE_PROMPT,
    count_constraints,
    difficulty_by_level,
    judge_difficulty,
)


def test_count_constraints():
    assert count_constraints("Write a haiku.") == 0
    assert count_constraints("Write a haiku that must include exactly 3 colours.") == 4  # must, include, exactly, 3
    assert count_constraints("Write at least two lines without rhyme.") == 2


def test_judge_difficulty_counts_what_it_cannot_parse():
    seen = []

    def gen(prompts, **kw):
        seen.append(kw)
        return [{"text": " 8/10" if "proof" in p else "1. Table", "finish_reason": "stop"} for p in prompts]

    out = judge_difficulty(gen, ["Write a  proof.", "Name a colour."], max_new_tokens=4, batch_size=2)
    assert [o["score"] for o in out] == [8, None] and out[1]["reply"] == "1. Table"
    assert seen[0]["temperature"] == 0.0 and seen[0]["max_new_tokens"] == 4 and seen[0]["stop"] == ["\n"]
    assert JUDGE_PROMPT.endswith("Task: {instruction}\nDifficulty:")


def test_difficulty_by_level_leaves_eliminated_records_out():
    recs = [
        {"instruction": "Write exactly 3 lines that must rhyme.", "status": "kept", "level": 1},
        {"instruction": "Write.", "status": "eliminated", "level": 2},
    ]
    d = difficulty_by_level(recs, ["Write a poem."])
    assert sorted(d) == [0, 1] and d[1]["mean_constraints"] > d[0]["mean_constraints"] and d[0]["mean_judge"] is None
    with pytest.raises(CourseError):
        difficulty_by_level([], [])
