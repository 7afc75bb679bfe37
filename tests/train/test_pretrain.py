"train.pretrain: an interrupted run resumes to the same weights; the fact-recall probe scores what it should."

import json

import torch

from instruct_course.data.world import (
    pretraining_text,
)
from instruct_course.train.pretrain import FACT_SLOTS, fact_recall_prompts, score_fact_recall


def test_pretrain_resumes_to_the_same_result(tmp_path):
    from instruct_course.models import train_tokenizer
    from instruct_course.train.pretrain import PretrainConfig, pretrain

    texts = pretraining_text(seed=0, n_docs=300)
    tok = train_tokenizer(texts, vocab_size=300)
    small = dict(steps=6, batch_size=4, block_size=32, warmup=2, save_every=3, seed=0)
    from transformers import LlamaForCausalLM

    from instruct_course.models import tiny_config

    mk = lambda: LlamaForCausalLM(tiny_config(tok, hidden=32, layers=1, heads=2, mlp=64))
    torch.manual_seed(0)
    full = pretrain(tmp_path / "a", texts, tok, PretrainConfig(**small), model=mk(), progress=False)
    # interrupted after 3 steps, then resumed
    torch.manual_seed(0)
    pretrain(tmp_path / "b", texts, tok, PretrainConfig(**small), model=mk(), progress=False, stop_after=3)
    cfg_b = json.loads((tmp_path / "b" / "checkpoint" / "optimizer.json").read_text())
    assert cfg_b["extra"]["step"] == 3
    resumed = pretrain(tmp_path / "b", texts, tok, PretrainConfig(**small), progress=False)
    assert resumed["loss"] == full["loss"]


def test_fact_recall_prompts_ask_for_one_fact_of_the_passage():
    recs = fact_recall_prompts(60, seed=3)
    assert recs == fact_recall_prompts(60, seed=3) and recs != fact_recall_prompts(60, seed=4)  # seeded
    for r in recs:
        passage, asked = r["prompt"].split(" Remember: ")
        verb, position = FACT_SLOTS[r["kind"]]
        assert f"{asked} {r['answer']}" in passage and asked.split(" ")[1] == verb and len(asked.split(" ")) == position
        assert r["answer"] in r["values"] and 1 <= len(r["values"]) <= r["people"] <= 3
    assert {r["kind"] for r in recs} == set(FACT_SLOTS)


def test_score_fact_recall_tells_right_wrong_person_and_made_up():
    recs = fact_recall_prompts(30, seed=0)
    other = [next((v for v in r["values"] if v != r["answer"]), "Atlantis") for r in recs]
    score = score_fact_recall(recs, [f" {r['answer']}. Ann is" for r in recs])
    assert score["accuracy"] == 1.0 and score["in_passage"] == 1.0 and 0.3 < score["chance"] < 0.6
    wrong = score_fact_recall(recs, other)
    assert wrong["accuracy"] == 0.0 and wrong["in_passage"] == sum(o != "Atlantis" for o in other) / len(recs)
    assert score_fact_recall(recs, ["Atlantis"] * 30)["in_passage"] == 0.0
