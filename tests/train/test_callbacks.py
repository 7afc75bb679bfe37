"train.callbacks: the early-stopping rule and the callback that applies it inside the Trainer."

import math

import pytest
import torch
from transformers import TrainerControl, TrainerState

from instruct_course.core import CourseError
from instruct_course.train.callbacks import EvalLossEarlyStopping, early_stop_index


def feed(cb, losses, every=10, model=None, on_step=None):
    st, ctl = TrainerState(), TrainerControl()
    for i, loss in enumerate(losses):
        st.global_step = (i + 1) * every
        if on_step:
            on_step(i)
        cb.on_evaluate(None, st, ctl, metrics={"eval_loss": loss}, model=model)
        if ctl.should_training_stop:
            break
    cb.on_train_end(None, st, ctl, model=model)
    return cb, ctl


@pytest.mark.parametrize(
    "losses, patience, min_delta, expected",
    [
        ([5, 4, 3, 2.5, 2.6, 2.8, 3.0], 2, 0.0, (3, 5)),  # the turn is at index 3; stop after 2 worse evaluations
        ([5, 4, 3, 2.5, 2.6, 2.8, 3.0], 3, 0.0, (3, 6)),
        ([5, 4, 3, 2, 1], 1, 0.0, (4, None)),  # still improving: never stops
        ([3, 2, 2.1, 1.9, 1.8], 2, 0.0, (4, None)),  # a blip is not a turn with patience 2
        ([3, 2, 2.1, 1.9, 1.8], 1, 0.0, (1, 2)),  # ... it is with patience 1
        ([3, 2.0, 1.995, 1.99], 2, 0.01, (1, 3)),  # gains under min_delta do not count
        ([2, 2, 2], 2, 0.0, (0, 2)),  # a flat loss is no improvement
    ],
)
def test_early_stop_index(losses, patience, min_delta, expected):
    assert early_stop_index(losses, patience, min_delta) == expected


def test_early_stop_index_failure_side():
    # a rule that stopped at the minimum itself, or never, would fail these
    best, stop = early_stop_index([4, 3, 2, 3, 4, 5], patience=2)
    assert (best, stop) == (2, 4) and stop != best
    assert early_stop_index([4, 3, 2, 3, 4, 5], patience=10)[1] is None
    for bad, msg in (([], "no eval losses"), ([1, math.nan], "diverged"), ([1], "patience")):
        with pytest.raises(CourseError, match=msg):
            early_stop_index(bad, patience=0 if msg == "patience" else 2)
    with pytest.raises(CourseError, match="min_delta"):
        early_stop_index([1, 2], min_delta=-1)
    with pytest.raises(CourseError, match="patience"):
        early_stop_index([1, 2], patience=True)


def test_callback_matches_rule_and_restores_best():
    seq = [5, 4, 3, 2.5, 2.6, 2.8, 3.0, 3.5]
    model = torch.nn.Linear(2, 1, bias=False)

    def step(i):
        with torch.no_grad():
            model.weight.fill_(float(i))  # weights "at evaluation i" are all i

    cb, ctl = feed(EvalLossEarlyStopping(patience=2), seq, model=model, on_step=step)
    b, s = early_stop_index(seq, 2)
    assert ctl.should_training_stop and cb.stopped_step == (s + 1) * 10 and cb.best_step == (b + 1) * 10 == 40
    assert cb.restored and torch.all(model.weight == 3.0)  # the weights of evaluation index 3, not the last ones (5)
    assert [loss for _, loss in cb.history] == seq[: s + 1]
    cb2, ctl2 = feed(EvalLossEarlyStopping(patience=2, restore_best=False), [5, 4, 3, 2], model=model, on_step=step)
    assert not ctl2.should_training_stop and cb2.stopped_step is None and not cb2.restored
    with pytest.raises(CourseError, match="eval_loss"):
        EvalLossEarlyStopping().on_evaluate(None, TrainerState(), TrainerControl(), metrics={"loss": 1.0})
    with pytest.raises(CourseError, match="patience"):
        EvalLossEarlyStopping(patience=0)
