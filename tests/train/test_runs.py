"""train.runs: fingerprints, record differences, what counts as a course file, claiming an output folder (another run
refused, overwrite removing only course files), and which checkpoint a resume takes."""

import json
from types import SimpleNamespace

import pytest
import torch

from instruct_course.core import CourseError, save_json
from instruct_course.data.masking import prepare_dataset
from instruct_course.models import load_model
from instruct_course.train.runs import (
    RUN_RECORD,
    RecordCheckpoints,
    checkpoint_to_resume,
    claim_output_dir,
    course_files,
    fingerprint_dataset,
    fingerprint_model,
    record_differences,
    run_record,
)

REC = {"instruction": "Uppercase the word.", "input": "cat", "response": "CAT"}


@pytest.fixture(scope="module")
def records(tok, tiny):
    ds = prepare_dataset([REC, {**REC, "input": "dog", "response": "DOG"}], tok, verbose=False)[0]
    a = run_record("sft", {"learning_rate": 2e-3, "max_steps": 4}, 0, tiny, ds, None, loss_on="response")
    b = run_record("sft", {"learning_rate": 2e-3, "max_steps": 8}, 0, tiny, ds, None, loss_on="response")
    return a, b


def test_fingerprints_see_every_token_and_weight(tok, tiny):
    ds = prepare_dataset([REC], tok, verbose=False)[0]
    other = prepare_dataset([{**REC, "response": "CAT."}], tok, verbose=False)[0]
    assert fingerprint_dataset(ds) == fingerprint_dataset(ds.to_list()) != fingerprint_dataset(other)
    assert fingerprint_dataset(ds)["examples"] == 1 and "labels" in fingerprint_dataset(ds)["columns"]
    changed = load_model("tiny", device="cpu")
    assert fingerprint_model(changed) == fingerprint_model(tiny)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-6  # one weight, a little
    assert fingerprint_model(changed)["sha256"] != fingerprint_model(tiny)["sha256"]
    with pytest.raises(CourseError, match="model must be a loaded model"):
        fingerprint_model("tiny")


def test_record_differences_name_each_field(records):
    a, b = records
    assert record_differences(a, a) == [] and record_differences(a, json.loads(json.dumps(a))) == []
    assert record_differences(a, b) == ["config.max_steps: 4 there, 8 now"]
    short = record_differences({"x": "a" * 64}, {"x": "b" * 64})
    assert short == ["x: aaaaaaaaaa… there, bbbbbbbbbb… now"]


def test_course_files_are_only_what_runs_write(tmp_path):
    for name in ("checkpoint-3", "checkpoint-best", "data", "runs"):
        (tmp_path / name).mkdir()
    for name in ("model.safetensors", "model-00001-of-00002.safetensors", "config.json", "train.jsonl", "notes.txt"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in course_files(tmp_path)] == [
        "checkpoint-3",
        "config.json",
        "model-00001-of-00002.safetensors",
        "model.safetensors",
    ]
    assert course_files(tmp_path / "missing") == []


def test_claim_refuses_another_run_and_overwrite_removes_only_course_files(tmp_path, records):
    a, b = records
    claim_output_dir(tmp_path, a)
    for name in ("checkpoint-1", "checkpoint-2", "data", "checkpoint-best"):
        (tmp_path / name).mkdir()
    (tmp_path / "model.safetensors").write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data" / "train.jsonl").write_text("{}")
    assert claim_output_dir(tmp_path, a) is None  # this run again
    with pytest.raises(CourseError, match=r"holds another run \(config.max_steps: 4 there, 8 now\).*overwrite_output"):
        claim_output_dir(tmp_path, b)
    assert json.loads((tmp_path / RUN_RECORD).read_text()) == a  # refused: the record is untouched
    claim_output_dir(tmp_path, b, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([RUN_RECORD, "checkpoint-best", "data", "notes.txt"])
    assert (tmp_path / "data" / "train.jsonl").exists() and json.loads((tmp_path / RUN_RECORD).read_text()) == b


def test_files_without_a_record_belong_to_another_run(tmp_path, records):
    (tmp_path / "model.safetensors").write_text("x")
    with pytest.raises(CourseError, match="model.safetensors has no run record"):
        claim_output_dir(tmp_path, records[0])
    save_json(records[0], tmp_path / "checkpoint-2" / RUN_RECORD)  # a copied checkpoint of this run: accepted
    (tmp_path / "model.safetensors").unlink()
    assert claim_output_dir(tmp_path, records[0], resume=True) == str(tmp_path / "checkpoint-2")


def test_resume_takes_the_latest_complete_checkpoint(tmp_path, records):
    a, b = records
    cb = RecordCheckpoints(a)
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        cb.on_save(SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=step), None)
    (tmp_path / "checkpoint-12").mkdir()  # killed while saving: no record
    cb.on_save(SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=99), None)  # no folder: no-op
    assert checkpoint_to_resume(tmp_path, True, a) == str(tmp_path / "checkpoint-10")  # 10 > 2 numerically
    assert checkpoint_to_resume(tmp_path, False, a) is None
    with pytest.raises(CourseError, match="belongs to another run"):
        checkpoint_to_resume(tmp_path, tmp_path / "checkpoint-2", b)
    with pytest.raises(CourseError, match="no readable course_run.json"):
        checkpoint_to_resume(tmp_path, str(tmp_path / "checkpoint-12"), a)
    with pytest.raises(CourseError, match="must be True, a checkpoint folder or None"):
        checkpoint_to_resume(tmp_path, 10, a)
