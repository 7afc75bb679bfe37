"Foundation: world determinism and splits, tokenizer round-trip, shipped model, loaders, CLI, JSONL errors."

import json
import subprocess
import sys
import time

import pytest
import torch

from instruct_course.core import CourseError, pick_device, read_jsonl, write_jsonl
from instruct_course.models import load_model, load_tokenizer, model_size, resolve_model, shipped_model_dir
from instruct_course.generation import generate
from instruct_course.data.world import (
    DEFAULT_HELDOUT_FAMILIES,
    FAMILIES,
    SPLITS,
    eval_keys,
    get_family,
    instance_text,
    make_splits,
    pretraining_text,
    render_record,
    score_response,
)


@pytest.fixture(scope="module")
def splits():
    return make_splits(seed=0)


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


def test_splits_share_no_instance(splits):
    sets = {s: {instance_text(r) for r in splits[s]} for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not sets[a] & sets[b], (a, b)


def test_instance_identity_ignores_template():
    # the check above must be able to fail: the same instance under two templates has one identity
    fam = FAMILIES["topic"]
    import random

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


def test_jsonl_errors_name_file_and_line(tmp_path):
    p = write_jsonl([{"instruction": "a", "response": "b"}], tmp_path / "x.jsonl")
    with open(p, "a") as f:
        f.write("not json\n")
    with pytest.raises(CourseError, match=r"x.jsonl:2"):
        read_jsonl(p)
    q = write_jsonl([{"instruction": "a"}], tmp_path / "y.jsonl")
    with pytest.raises(CourseError, match=r"y.jsonl:1: missing field 'response'"):
        read_jsonl(q, required=["instruction", "response"])


def test_tokenizer_round_trips_world_text_and_anything(splits):
    tok = load_tokenizer("tiny")
    for r in splits["train"][:300]:
        for s in (r["instruction"], r["input"], r["response"]):
            assert tok.decode(tok(s, add_special_tokens=False)["input_ids"]) == s
    for s in ["Ünïcödé ✓ 日本語 🙂", "tabs\tand\nnewlines", "   spaces  "]:
        assert tok.decode(tok(s, add_special_tokens=False)["input_ids"]) == s
    assert tok.tokenize("1234") == ["1", "2", "3", "4"]
    assert tok.pad_token_id != tok.eos_token_id and tok.chat_template


def test_shipped_model_loads_offline_and_generates():
    d = shipped_model_dir("tiny")
    assert (d / "model.safetensors").exists() and not list(d.glob("*.bin")) and not list(d.glob("*.pt"))
    assert sum(f.stat().st_size for f in d.iterdir() if f.is_file()) <= 20 * 2**20
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(d)
    t = AutoTokenizer.from_pretrained(d)
    x = t("Tom is 12 years old. Tom lives in", return_tensors="pt")
    out = m.generate(**x, max_new_tokens=5, do_sample=False, pad_token_id=t.pad_token_id)
    assert out.shape[1] == x["input_ids"].shape[1] + 5 or t.eos_token_id in out[0].tolist()
    assert model_size(m)["params"] < 5_000_000


def test_shipped_sft_model_follows_instructions_where_base_does_not():
    "tiny-sft resolves by name, is a plain save_pretrained dir, and answers world instructions the base model cannot."
    d = shipped_model_dir("tiny-sft")
    assert resolve_model("tiny-sft")["path"] == d and (d / "model.safetensors").exists() and not list(d.glob("*.bin"))
    stats = json.loads((d / "sft_stats.json").read_text())
    assert stats["exact_match"]["heldout_instances"] > stats["exact_match_base"]["heldout_instances"] + 0.5
    from instruct_course.data.world import make_splits, score_response

    recs = [
        r for r in make_splits(seed=0)["heldout_instances"] if r["task"] in ("uppercase", "sentiment", "translate")
    ][:24]
    prompts = [
        f"Instruction: {r['instruction']}" + (f"\nInput: {r['input']}" if r["input"] else "") + "\nResponse:"
        for r in recs
    ]
    ems = {}
    for name in ("tiny", "tiny-sft"):
        tok, m = load_tokenizer(name), load_model(name, device="cpu")
        outs = generate(m, tok, prompts, max_new_tokens=24, batch_size=24)
        ems[name] = sum(score_response(r["task"], o["text"], r["response"]) for r, o in zip(recs, outs)) / len(recs)
    assert ems["tiny"] <= 0.1 and ems["tiny-sft"] >= 0.8, ems
    with pytest.raises(CourseError, match="valid"):
        shipped_model_dir("tiny-dpo")


def test_generate_batched_equals_unbatched_greedy():
    tok, m = load_tokenizer("tiny"), load_model("tiny", device="cpu")
    prompts = ["Tom is 12 years old.", 'In French, "the black cat eats the fish" is', "def f(x):"]
    batched = generate(m, tok, prompts, max_new_tokens=8, batch_size=3)
    single = [generate(m, tok, [p], max_new_tokens=8)[0] for p in prompts]
    assert [b["text"] for b in batched] == [s["text"] for s in single]
    assert all(o["finish_reason"] in ("stop", "length") for o in batched)


def test_offline_hub_id_fails_fast_naming_embedded(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(CourseError) as e:
        load_model("some-org/definitely-not-cached-model")
    assert time.perf_counter() - t0 < 2
    assert "'tiny'" in str(e.value) and "'smollm2'" in str(e.value)


def test_unknown_names_list_valid_ones(tmp_path):
    with pytest.raises(CourseError, match="did you mean 'tiny'"):
        resolve_model("tinny")
    with pytest.raises(CourseError, match="does not exist"):
        resolve_model("./nope/missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CourseError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    assert resolve_model(str(shipped_model_dir("tiny")))["kind"] == "local"


def test_smollm2_gguf_is_found_through_metadata():
    info = resolve_model("smollm2")
    assert info["kind"] == "smollm2"
    assert "gguf_file" not in info or info["gguf_file"].endswith(".gguf")


def test_device_choice():
    assert pick_device("cpu") == (torch.device("cpu"), torch.float32)
    with pytest.raises(CourseError):
        pick_device("tpu")


def test_cli_world_export(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "instruct_course.cli",
            "world",
            "export",
            str(tmp_path),
            "--n-train",
            "20",
            "--n-eval",
            "4",
            "--n-docs",
            "10",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    for s in SPLITS:
        recs = read_jsonl(tmp_path / f"{s}.jsonl", required=["instruction", "input", "response", "task", "template_id"])
        assert recs
    assert (tmp_path / "pretrain.txt").read_text().strip()


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
