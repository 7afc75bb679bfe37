"train.pretrain: an interrupted run resumes to the same weights."

import json

import torch

from instruct_course.data.world import (
    pretraining_text,
)


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
