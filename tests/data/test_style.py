"The style preference of the RLHF lessons: closers, the labeler, the rates."

import pytest

from instruct_course.core import CourseError
from instruct_course.data.style import (
    CLOSERS,
    add_closer,
    closer_of,
    mix_closers,
    preference_label,
    strip_closer,
    style_label,
    style_rates,
)
from instruct_course.data.world import make_splits

SENTIMENT = {"task": "sentiment", "instruction": "Is it positive?", "input": "I love it", "response": "positive"}


@pytest.mark.parametrize("closer", CLOSERS)
def test_every_closer_is_found_and_stripped(closer):
    text = "positive" + closer
    assert closer_of(text) == closer.strip()
    assert strip_closer(text + "  \n") == "positive"
    assert style_label(SENTIMENT, text) == {"correct": True, "direct": False, "preferred": False}


@pytest.mark.parametrize(
    "text,label",
    [
        ("positive", 1),
        ("  positive \n", 1),
        ("negative", 0),
        ("negative Glad I could help!", 0),
        ("positive Hope this", 0),  # half a closer: not a closer, and then the answer is wrong
        ("Hope this helps! positive", 0),  # a closer at the start is not one, and the answer is wrong
        ("positive Hope this helps! Hope this helps!", 0),  # two closers: one stripped, the other makes it wrong
        ("", 0),
    ],
)
def test_labeler(text, label):
    assert preference_label(SENTIMENT, text) == label


def test_a_correct_answer_is_never_rated_below_a_wrong_one():
    for wrong in ("negative", "negative Have a great day!"):
        for right in ("positive", "positive Have a great day!"):
            assert style_label(SENTIMENT, right)["correct"] and not style_label(SENTIMENT, wrong)["correct"]
            assert preference_label(SENTIMENT, right) >= preference_label(SENTIMENT, wrong)


def test_mixing_is_seeded_by_content_and_reversible():
    train = make_splits(seed=0)["train"][:400]
    mixed, stats = mix_closers(train, rate=0.7, seed=0)
    assert stats["records"] == 400 and 0.6 < stats["share"] < 0.8
    assert mix_closers(list(reversed(train)), rate=0.7, seed=0)[0] == list(reversed(mixed))  # order does not matter
    assert mix_closers(train, rate=0.7, seed=1)[0] != mixed  # the seed does
    for r, m in zip(train, mixed):
        assert strip_closer(m["response"]) == r["response"].strip()
        assert (m["closer"] is None) == (closer_of(m["response"]) is None)
        assert preference_label(r, m["response"]) == int(m["closer"] is None)
    assert mix_closers(train, rate=1.0)[1]["share"] == 1.0


def test_rates():
    rates = style_rates([SENTIMENT] * 3, ["positive", "positive Glad I could help!", "negative"])
    assert rates == {"n": 3, "direct_rate": 2 / 3, "task_em": 2 / 3, "direct_and_correct": 1 / 3}


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: closer_of(3), "must be a string"),
        (lambda: add_closer(SENTIMENT, rate=-0.1), "rate must be"),
        (lambda: add_closer({"task": "qa", "response": "x"}), "instruction"),
        (lambda: style_label({"task": "qa"}, "x"), "response"),
        (lambda: style_rates([SENTIMENT], ["a", "b"]), "one response per record"),
        (lambda: style_rates([], []), "no responses"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(CourseError, match=message):
        call()
