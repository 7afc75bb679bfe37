"Pitfalls lesson: the early-stopping rule and callback, the pretraining mix, the repaired table, a short real early-stopped run."

import math
from collections import Counter

import pytest
import torch
from transformers import TrainerControl, TrainerState

from instruct_course.core import CourseError
from instruct_course.data.masking import IGNORE_INDEX
from instruct_course.models import load_tokenizer
from instruct_course.train.callbacks import (
    PITFALLS_TABLE,
    EvalLossEarlyStopping,
    _train,
    curves,
    early_stop_index,
    heldout_pretraining_text,
    mix_pretraining,
    overfit_data,
    pitfall_setup,
)
from instruct_course.data.world import make_splits, pretraining_text


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


def feed(cb, losses, every=10, model=None, on_step=None):
    st, ctl = TrainerState(), TrainerControl()
    for i, l in enumerate(losses):
        st.global_step = (i + 1) * every
        if on_step:
            on_step(i)
        cb.on_evaluate(None, st, ctl, metrics={"eval_loss": l}, model=model)
        if ctl.should_training_stop:
            break
    cb.on_train_end(None, st, ctl, model=model)
    return cb, ctl


def test_table_is_repaired():
    assert [r["pitfall"] for r in PITFALLS_TABLE] == [
        "Overfitting",
        "Underfitting",
        "Catastrophic forgetting",
        "Data contamination",
    ]
    text = " ".join(v for r in PITFALLS_TABLE for v in r.values())
    assert "β" not in text and "train loss ↓, eval loss ↑" == PITFALLS_TABLE[0]["symptom"]


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
    assert [l for _, l in cb.history] == seq[: s + 1]
    cb2, ctl2 = feed(EvalLossEarlyStopping(patience=2, restore_best=False), [5, 4, 3, 2], model=model, on_step=step)
    assert not ctl2.should_training_stop and cb2.stopped_step is None and not cb2.restored
    with pytest.raises(CourseError, match="eval_loss"):
        EvalLossEarlyStopping().on_evaluate(None, TrainerState(), TrainerControl(), metrics={"loss": 1.0})


def test_mix_pretraining_really_inserts_text(tok):
    recs = make_splits(seed=0, n_train=10, n_eval=1)["train"][:70]
    docs = pretraining_text(seed=5, n_docs=50)
    ds = mix_pretraining(recs, docs, tok, ratio=0.3, doc_tokens=64)
    assert Counter(ds["source"]) == {"sft": 70, "pretrain": 30}
    pre = [r for r in ds if r["source"] == "pretrain"]
    sft = [r for r in ds if r["source"] == "sft"]
    assert all(
        IGNORE_INDEX not in r["labels"] and r["labels"] == r["input_ids"] and len(r["input_ids"]) <= 64 for r in pre
    )
    assert all(r["input_ids"][-1] == tok.eos_token_id for r in pre)
    assert all(IGNORE_INDEX in r["labels"] for r in sft)
    doc_texts = {tok.decode(r["input_ids"][:-1]) for r in pre}
    assert any(t and any(d.startswith(t[:30]) for d in docs) for t in doc_texts)  # the rows are the documents' text
    assert Counter(mix_pretraining(recs, [], tok, ratio=0.0)["source"]) == {"sft": 70}
    with pytest.raises(CourseError, match="needs pretraining documents"):
        mix_pretraining(recs, [], tok, ratio=0.5)
    with pytest.raises(CourseError, match="ratio"):
        mix_pretraining(recs, docs, tok, ratio=1.0)


def test_heldout_pretraining_text_is_not_the_mix(tok):
    setup = pitfall_setup(seed=0, quick=True, n_train=5, n_eval=1, n_ppl_docs=20)
    held = heldout_pretraining_text(setup)
    mix_docs = pretraining_text(seed=456, n_docs=200)
    assert len(held) == 20 and not set(held) & set(mix_docs)


def test_real_run_stops_where_eval_loss_turns(tmp_path):
    setup = pitfall_setup(seed=0, quick=True, n_train=20, n_eval=2, overfit_n=24)
    small, held = overfit_data(setup)
    kw = dict(max_steps=60, batch_size=8, eval_steps=3, logging_steps=3)
    _, log = _train(setup, small, tmp_path / "full", held[:10], **kw)
    ev = curves(log)["eval"]
    b, s = early_stop_index([l for _, l in ev], patience=2)
    assert s is not None, f"no turn in {ev}"
    cb = EvalLossEarlyStopping(patience=2)
    _, log2 = _train(setup, small, tmp_path / "es", held[:10], callbacks=[cb], **kw)
    assert cb.stopped_step == ev[s][0] and cb.best_step == ev[b][0] and cb.restored
    assert max(h["step"] for h in log2 if "step" in h) == cb.stopped_step < 60
