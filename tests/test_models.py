"models: tokenizer round trip, shipped models, the resolver's errors, SmolLM2 offline."

import json
import time

import pytest
import torch

from instruct_course.core import CourseError
from instruct_course.data.world import (
    make_splits,
    score_response,
)
from instruct_course.generation import generate
from instruct_course.models import load_model, load_tokenizer, model_size, resolve_model, shipped_model_dir


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


def _dtype_policy(monkeypatch, bf16_units: bool, forced: str | None) -> None:
    "Make `core.pick_dtype` see a CPU with or without bf16 units, and set or clear INSTRUCT_COURSE_DTYPE."
    import instruct_course.core as core

    monkeypatch.setattr(core, "has_bf16_units", lambda flags=None: bf16_units)
    monkeypatch.setattr(core, "_ANNOUNCED", set())
    if forced is None:
        monkeypatch.delenv("INSTRUCT_COURSE_DTYPE", raising=False)
    else:
        monkeypatch.setenv("INSTRUCT_COURSE_DTYPE", forced)


@pytest.mark.parametrize(
    "bf16_units, forced, smollm2_dtype, tiny_dtype",
    [
        (True, None, torch.bfloat16, torch.float32),  # the policy: bf16 for the wide model only
        (False, None, torch.float32, torch.float32),  # no bf16 units: fp32 everywhere
        (True, "fp32", torch.float32, torch.float32),  # forced fp32
        (False, "bf16", torch.bfloat16, torch.bfloat16),  # forced bf16, even for the tiny model
    ],
)
def test_load_model_applies_the_dtype_policy(monkeypatch, capsys, bf16_units, forced, smollm2_dtype, tiny_dtype):
    _dtype_policy(monkeypatch, bf16_units, forced)
    assert load_model("tiny", device="cpu").dtype == tiny_dtype
    quiet = capsys.readouterr().out
    assert ("number format" in quiet) == (forced is not None)  # the plain default is not announced
    assert load_model("smollm2", device="cpu").dtype == smollm2_dtype
    said = capsys.readouterr().out
    assert f"number format: {str(smollm2_dtype).replace('torch.', '')} on cpu" in said or forced is not None


def test_load_model_dtype_argument_overrides_the_policy(monkeypatch):
    _dtype_policy(monkeypatch, True, None)
    assert load_model("smollm2", device="cpu", dtype=torch.float32).dtype == torch.float32
    _dtype_policy(monkeypatch, False, None)
    assert load_model("tiny", device="cpu", dtype=torch.bfloat16).dtype == torch.bfloat16
