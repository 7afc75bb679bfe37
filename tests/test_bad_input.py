"""The bad-input matrix of issue 14: one table per family of public entry points (IO, world export, masking, SFT,
reward and rankings, DPO/PPO configs, loaders, CLI, grader). Each row is an input and its expected outcome: an error
type with a phrase of its message (and what must still be true afterwards: nothing deleted, nothing half-written), or
the safe result. Every case listed in issue 14 has a row, and so do the probes that already passed, so they stay
passing.

`Row.case` names the issue's case: 1-8 for its eight numbered cases, "small" for its list of smaller ones, "" for a
probe that passed before. `Row.old_fails` marks the rows that fail on the code before this wave (commit 463663b):
checked by running this file against that commit's tree with modules aliased to their new paths (see the report of
issue 14). Slow cases with real kernels or subprocesses live elsewhere and are only referenced here: a cell that
swallows KeyboardInterrupt and the grader's memory bound (tests/grading/test_grader.py), killed runs
(tests/test_faults.py)."""

import contextlib
import copy
import errno
import importlib
import io
import json
import math
import os
import re
import shutil
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
import torch

from instruct_course import cli, core, models
from instruct_course.core import CourseError
from instruct_course.data import masking, preferences, world_export
from instruct_course.grading import grader
from instruct_course.train import dpo, ppo, reward, reward_training, sft


@dataclass
class Raises:
    "The expected failure: `type` with `phrase` in its message; `then(ctx)` must hold afterwards."

    type: type
    phrase: str
    then: object = None


@dataclass
class Row:
    id: str
    action: object  # action(ctx) -> result
    expect: object  # a Raises, or a check(result, ctx) -> bool for the safe result
    case: str = ""  # "1".."8": issue 14's numbered cases; "small": its smaller ones; "": a probe that passed before
    old_fails: bool = False  # fails on commit 463663b (before this wave)
    setup: object = None  # setup(ctx) before the action
    marks: tuple = field(default_factory=tuple)


@dataclass
class Ctx:
    path: Path
    monkeypatch: object
    fixtures: dict


def params(rows):
    return [pytest.param(r, id=f"{r.case or 'p'}:{r.id}", marks=r.marks) for r in rows]


def run_row(row: Row, ctx: Ctx):
    if row.setup:
        row.setup(ctx)
    if isinstance(row.expect, Raises):
        with pytest.raises(row.expect.type, match=re.escape(row.expect.phrase) if row.expect.phrase else None):
            row.action(ctx)
        assert row.expect.then is None or row.expect.then(ctx), "the state after the error is wrong"
    else:
        result = row.action(ctx)
        assert row.expect(result, ctx), f"unexpected result: {result!r:.300}"


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    return Ctx(tmp_path, monkeypatch, {})


def files(d: Path) -> dict:
    "Every file under `d` (names relative to it) with its bytes."
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def write(p: Path, text: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


# ------------------------------------------------------------------------------------------------ IO (core)
def _victims(c):
    "A root, a sibling folder with a file, and a file in the root's parent, for run_dir to leave alone."
    write(c.path / "root" / "keep.txt", "k")
    write(c.path / "sibling.txt", "s")
    write(c.path / "victim" / "data.txt", "v")
    (c.path / "root" / "link").symlink_to(c.path / "victim")


def _untouched(c):
    return all((c.path / f).exists() for f in ("root/keep.txt", "sibling.txt", "victim/data.txt"))


def _root(c):
    return c.path / "root"


IO_ROWS = [
    Row(
        "run_dir '..' fresh",
        lambda c: core.run_dir("..", root=_root(c), fresh=True),
        Raises(CourseError, "bad run name", _untouched),
        "1",
        True,
        _victims,
    ),
    Row(
        "run_dir absolute name fresh",
        lambda c: core.run_dir(str(c.path / "victim"), root=_root(c), fresh=True),
        Raises(CourseError, "bad run name", _untouched),
        "1",
        True,
        _victims,
    ),
    Row(
        "run_dir 'a/../../victim' fresh",
        lambda c: core.run_dir("a/../../victim", root=_root(c), fresh=True),
        Raises(CourseError, "bad run name", _untouched),
        "1",
        False,
        _victims,
    ),
    Row(
        "run_dir '.' fresh",
        lambda c: core.run_dir(".", root=_root(c), fresh=True),
        Raises(CourseError, "bad run name", _untouched),
        "1",
        True,
        _victims,
    ),
    Row(
        "run_dir symlink out of the root",
        lambda c: core.run_dir("link", root=_root(c), fresh=True),
        Raises(CourseError, "outside the root", _untouched),
        "1",
        True,
        _victims,
    ),
    Row(
        "run_dir empty name",
        lambda c: core.run_dir("", root=_root(c)),
        Raises(CourseError, "non-empty string"),
        "",
        True,
    ),
    Row(
        "run_dir nested fresh: inside the root",
        lambda c: core.run_dir("exp/seed0", root=_root(c), fresh=True),
        lambda d, c: d == _root(c) / "exp" / "seed0" and d.is_dir() and _untouched(c),
        "1",
        False,
        _victims,
    ),
    Row("read_jsonl missing file", lambda c: core.read_jsonl(c.path / "none.jsonl"), Raises(CourseError, "not found")),
    Row(
        "read_jsonl a directory",
        lambda c: core.read_jsonl(c.path),
        Raises(CourseError, "is a directory"),
        "small",
        True,
    ),
    Row(
        "read_jsonl invalid UTF-8 on line 2",
        lambda c: core.read_jsonl(write(c.path / "b.jsonl", b'{"a": "x"}\n{"a": "\xff"}\n')),
        Raises(CourseError, "b.jsonl:2: not UTF-8"),
        "small",
        True,
    ),
    Row(
        "read_jsonl UTF-8 byte-order mark",
        lambda c: core.read_jsonl(write(c.path / "bom.jsonl", b'\xef\xbb\xbf{"a": "x"}\n')),
        lambda r, c: r == [{"a": "x"}],
        "small",
        True,
    ),
    Row(
        "read_jsonl truncated line 2",
        lambda c: core.read_jsonl(write(c.path / "t.jsonl", '{"a": "x"}\n{"a": "y"\n')),
        Raises(CourseError, "t.jsonl:2: not valid JSON"),
    ),
    Row(
        "read_jsonl a list line",
        lambda c: core.read_jsonl(write(c.path / "l.jsonl", "[1, 2]\n")),
        Raises(CourseError, "must be a JSON object"),
    ),
    Row(
        "read_jsonl missing required field",
        lambda c: core.read_jsonl(write(c.path / "m.jsonl", '{"a": "x"}\n'), required=["b"]),
        Raises(CourseError, "m.jsonl:1: missing field 'b'"),
    ),
    Row(
        "read_jsonl field of the wrong type",
        lambda c: core.read_jsonl(write(c.path / "w.jsonl", '{"a": "x"}\n'), required={"a": int}),
        Raises(CourseError, "field 'a' must be an int"),
    ),
    Row(
        "read_jsonl CRLF and blank lines",
        lambda c: core.read_jsonl(write(c.path / "crlf.jsonl", b'{"a": "x"}\r\n\r\n{"a": "y"}\r\n')),
        lambda r, c: r == [{"a": "x"}, {"a": "y"}],
    ),
    Row(
        "write_jsonl/read_jsonl round trip of odd text",
        lambda c: core.read_jsonl(core.write_jsonl([{"t": 'é\n\t"😀\u2028'}, {"t": ""}], c.path / "o.jsonl")),
        lambda r, c: r == [{"t": 'é\n\t"😀\u2028'}, {"t": ""}],
    ),
    Row(
        "write_jsonl of an object JSON cannot hold leaves no .tmp",
        lambda c: core.write_jsonl([{"a": object()}], c.path / "x.jsonl"),
        Raises(TypeError, "", lambda c: not list(c.path.glob("*.tmp"))),
        "",
        True,
        marks=(pytest.mark.xfail(strict=True, reason="core.write_jsonl leaves x.jsonl.tmp (reported to the lead)"),),
    ),
    Row(
        "save_json NaN becomes null",
        lambda c: json.loads(core.save_json({"x": math.nan}, c.path / "n.json").read_text()),
        lambda r, c: r == {"x": None},
        "",
        True,
    ),
    Row("seed_everything(-1)", lambda c: core.seed_everything(-1), Raises(CourseError, "non-negative int")),
]


@pytest.mark.parametrize("row", params(IO_ROWS))
def test_io(row, ctx):
    run_row(row, ctx)


# ------------------------------------------------------------------------------------------------ world export
SMALL = dict(n_train=4, n_eval=1, n_docs=5)
NAMES = ["train.jsonl", "heldout_instances.jsonl", "heldout_templates.jsonl", "heldout_families.jsonl", "pretrain.txt"]


def _old_export(c):
    "A folder with a user's file and an earlier export (seed 1) in it."
    world_export.export_world(c.path / "w", seed=1, **SMALL)
    write(c.path / "w" / "notes.txt", "mine")
    c.fixtures["before"] = files(c.path / "w")


def _unchanged(c):
    return files(c.path / "w") == c.fixtures["before"] and _no_temp(c)


def _no_temp(c):
    return not list(c.path.rglob("*.tmp")) and not list(c.path.glob(".*.export-*"))


def _fail_mid_write(c, exc):
    "Make the export fail after it has written the splits (while it makes the pretraining text)."

    def boom(*a, **k):
        raise exc

    c.monkeypatch.setattr(world_export, "pretraining_text", boom)


def _replaced(counts, c):
    now = files(c.path / "w")
    return (
        counts["train"] == len(core.read_jsonl(c.path / "w" / "train.jsonl"))
        and now["notes.txt"] == b"mine"
        and now["train.jsonl"] != c.fixtures["before"]["train.jsonl"]
        and sorted(now) == sorted(world_export.world_files() + ["notes.txt"])
        and _no_temp(c)
    )


WORLD_ROWS = [
    Row(
        "non-empty folder refused",
        lambda c: world_export.export_world(c.path / "w", **SMALL),
        Raises(CourseError, "not empty (it holds", _unchanged),
        "2",
        True,
        _old_export,
    ),
    Row(
        "non-empty folder with force: only the world's files replaced",
        lambda c: world_export.export_world(c.path / "w", force=True, **SMALL),
        _replaced,
        "2",
        True,
        _old_export,
    ),
    Row(
        "target is a file",
        lambda c: world_export.export_world(write(c.path / "f.txt", "x"), **SMALL),
        Raises(CourseError, "is a file, not a folder"),
        "2",
        True,
    ),
    Row(
        "unwritable: a path through a file",
        lambda c: world_export.export_world(write(c.path / "f.txt", "x") / "w", **SMALL),
        Raises(CourseError, "f.txt is a file, not a folder", _no_temp),
        "2",
        True,
    ),
    Row(
        "unwritable: a read-only file system",
        lambda c: world_export.export_world("/sys/instruct-course-world", **SMALL),
        Raises(CourseError, "cannot write the world to /sys/instruct-course-world"),
        "2",
        True,
        marks=(pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="no Linux /sys"),),
    ),
    Row(
        "disk full mid-write: old files intact, no temp files",
        lambda c: world_export.export_world(c.path / "w", force=True, **SMALL),
        Raises(CourseError, "No space left on device", _unchanged),
        "2",
        True,
        lambda c: (_old_export(c), _fail_mid_write(c, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))),
    ),
    Row(
        "interrupted mid-write: old files intact, no temp files",
        lambda c: world_export.export_world(c.path / "w", force=True, **SMALL),
        Raises(KeyboardInterrupt, "", _unchanged),
        "2",
        True,
        lambda c: (_old_export(c), _fail_mid_write(c, KeyboardInterrupt())),
    ),
    Row(
        "a killed export's temp folder is removed by the next export",
        lambda c: world_export.export_world(c.path / "w", **SMALL),
        lambda r, c: _no_temp(c) and (c.path / "w" / "pretrain.txt").exists(),
        "2",
        True,
        lambda c: (c.path / ".w.export-999999999-0a1b2c3d").mkdir(),
    ),
    Row(
        "new nested folder",
        lambda c: world_export.export_world(c.path / "a" / "b", **SMALL),
        lambda r, c: sorted(p.name for p in (c.path / "a" / "b").iterdir()) == sorted(NAMES),
    ),
    Row("n_train < 0", lambda c: world_export.export_world(c.path / "w", n_train=-1), Raises(CourseError, "n_train")),
    Row(
        "n_docs not a number",
        lambda c: world_export.export_world(c.path / "w", n_docs="many"),
        Raises(CourseError, "n_docs must be a whole number"),
        "2",
        True,
    ),
]


@pytest.mark.parametrize("row", params(WORLD_ROWS))
def test_world_export(row, ctx):
    run_row(row, ctx)


# ------------------------------------------------------------------------------------------------ masking
@pytest.fixture(scope="module")
def smol_tok():
    return models.load_tokenizer("smollm2")


def _prep(c, response="hi", instruction="Say hi.", tok="tiny", **kw):
    t = c.fixtures["smol"] if tok == "smollm2" else c.fixtures["tok"]
    return masking.prepare_instruction_data(instruction, response, t, **kw)


def _one_eos_at_the_end(ex, c, tok="tiny"):
    t = c.fixtures["smol"] if tok == "smollm2" else c.fixtures["tok"]
    specials = {t.convert_tokens_to_ids(s) for s in masking.special_token_strings(t)}
    return ex["labels"][-1] == t.eos_token_id and not specials & set(ex["input_ids"][:-1])


def _typed_eos_text(ex, c):
    t = c.fixtures["tok"]
    return masking.decode_targets(ex, t) == " It is <|endoftext|> here." + t.eos_token and _one_eos_at_the_end(ex, c)


REC = {"instruction": "Say hi.", "response": "hi"}
LONG = {"instruction": "Say it.", "response": "a much longer answer than four tokens"}
MASKING_ROWS = [
    Row("empty response", lambda c: _prep(c, ""), Raises(CourseError, "empty response")),
    Row("whitespace response", lambda c: _prep(c, "  \n\t"), Raises(CourseError, "empty response")),
    Row("empty instruction", lambda c: _prep(c, instruction=" "), Raises(CourseError, "empty instruction")),
    Row("response None", lambda c: _prep(c, None), Raises(CourseError, "response must be a string")),
    Row("input a number", lambda c: _prep(c, input=3), Raises(CourseError, "input must be a string")),
    Row("truncation 'right'", lambda c: _prep(c, truncation="right"), Raises(CourseError, "truncation must be")),
    *[
        Row(
            f"max_length {v!r}",
            lambda c, v=v: _prep(c, max_length=v),
            Raises(CourseError, f"max_length must be a positive whole number of tokens (such as 512), got {v!r}"),
            "small",
            True,
        )
        for v in (0, -8, 12.5, "512", True, None)
    ],
    Row(
        "max_length below the response",
        lambda c: _prep(c, "a much longer answer than four tokens", max_length=4),
        Raises(masking.ExampleTooLong, "the response alone does not fit"),
    ),
    Row(
        "truncation 'drop' of a long prompt",
        lambda c: _prep(c, instruction="Read. " * 50, max_length=16, truncation="drop"),
        Raises(masking.ExampleTooLong, "dropped (truncation='drop')"),
    ),
    Row(
        "'<|endoftext|>' typed in a response (tiny)",
        lambda c: _prep(c, "It is <|endoftext|> here."),
        _typed_eos_text,
        "small",
        True,
    ),
    Row(
        "'<|im_end|>' (its EOS) typed in a response (smollm2, alpaca)",
        lambda c: _prep(c, "Stop at <|im_end|> or not.", tok="smollm2", style="alpaca"),
        lambda ex, c: _one_eos_at_the_end(ex, c, "smollm2"),
        "small",
        True,
    ),
    Row(
        "'<|endoftext|>' typed in an instruction and input (tiny)",
        lambda c: _prep(c, instruction="Say <|endoftext|>.", input="<|im_start|>x"),
        _one_eos_at_the_end,
        "small",
        True,
    ),
    Row(
        "a special token typed in a chat-style response is refused",
        lambda c: _prep(c, "done <|im_end|> more", style="chat"),
        Raises(CourseError, "reads as a special token"),
        "small",
        True,
    ),
    Row(
        "ordinary text tokenises as before",
        lambda c: (_prep(c, "le chat noir", "Translate to French."), c.fixtures["tok"]),
        lambda r, c: (
            r[0]["input_ids"][:-1]
            == r[1]("Instruction: Translate to French.\nResponse: le chat noir", add_special_tokens=False)["input_ids"]
        ),
    ),
    Row("unknown style", lambda c: _prep(c, style="markdown"), Raises(CourseError, "unknown prompt style")),
    Row(
        "prepare_dataset of nothing",
        lambda c: masking.prepare_dataset([], c.fixtures["tok"]),
        Raises(CourseError, "the dataset is empty"),
        "small",
        True,
    ),
    Row(
        "prepare_dataset of a string",
        lambda c: masking.prepare_dataset("data.jsonl", c.fixtures["tok"]),
        Raises(CourseError, "records must be a list of dicts"),
        "",
        True,
    ),
    Row(
        "prepare_dataset record without response",
        lambda c: masking.prepare_dataset([{"instruction": "x"}], c.fixtures["tok"]),
        Raises(CourseError, "record 0: missing field 'response'"),
    ),
    Row(
        "prepare_dataset with every example too long",
        lambda c: masking.prepare_dataset([LONG, LONG], c.fixtures["tok"], max_length=4, verbose=False),
        Raises(CourseError, "all 2 examples are longer than max_length=4"),
        "",
        True,
    ),
    Row(
        "prepare_dataset max_length 0",
        lambda c: masking.prepare_dataset([REC], c.fixtures["tok"], max_length=0),
        Raises(CourseError, "max_length must be a positive whole number"),
        "small",
        True,
    ),
    Row(
        "collator: empty batch",
        lambda c: masking.InstructionCollator(c.fixtures["tok"])([]),
        Raises(CourseError, "empty batch"),
    ),
    Row(
        "pad_sequences side 'middle'",
        lambda c: masking.pad_sequences([[1]], 0, side="middle"),
        Raises(CourseError, "padding side"),
        "",
        True,
    ),
    Row(
        "pad == eos: the collator keeps the EOS label",
        lambda c: masking.InstructionCollator(c.fixtures["pad_eos"])(
            [masking.prepare_instruction_data("Say hi.", r, c.fixtures["pad_eos"]) for r in ("hi", "hello there")]
        ),
        lambda b, c: int((b["labels"] == c.fixtures["pad_eos"].eos_token_id).sum()) == 2,
    ),
    Row(
        "a fully masked batch: loss 0, not NaN",
        lambda c: masking.masked_lm_loss(torch.zeros(1, 3, 5, requires_grad=True), torch.full((1, 3), -100)),
        lambda loss, c: loss.item() == 0.0 and loss.requires_grad,
    ),
]


@pytest.mark.parametrize("row", params(MASKING_ROWS))
@pytest.mark.filterwarnings("ignore:batch has no response tokens")
def test_masking(row, ctx, tok, smol_tok):
    pad_eos = copy.deepcopy(tok)
    pad_eos.pad_token = pad_eos.eos_token
    ctx.fixtures.update(tok=tok, smol=smol_tok, pad_eos=pad_eos)
    run_row(row, ctx)


# ------------------------------------------------------------------------------------------------ SFT
RECS = [{"instruction": "Uppercase the word.", "input": w, "response": w.upper()} for w in ("cat", "dog", "sun", "sea")]
QUICK = dict(max_steps=2, batch_size=2, save_steps=1, logging_steps=1, progress=False)


def _train(c, out="run", data=RECS, **kw):
    return sft.train_sft_stage(
        models.load_model("tiny", device="cpu"), data, c.fixtures["tok"], output_dir=c.path / out, **{**QUICK, **kw}
    )


@pytest.fixture(scope="module")
def other_run(tmp_path_factory, tok):
    "An output folder holding a finished 3-step run with two checkpoints (another run for every row below)."
    d = tmp_path_factory.mktemp("other") / "run"
    sft.train_sft_stage(models.load_model("tiny", device="cpu"), RECS, tok, output_dir=d, **{**QUICK, "max_steps": 3})
    return d


def _copy_other_run(c):
    shutil.copytree(c.fixtures["other_run"], c.path / "run")
    write(c.path / "run" / "notes.txt", "mine")
    c.fixtures["before"] = files(c.path / "run")


def _run_unchanged(c):
    return files(c.path / "run") == c.fixtures["before"]


def _no_output(c):
    return not (c.path / "run").exists()


def _overwritten(model, c):
    d = c.path / "run"
    rec = json.loads((d / "course_run.json").read_text())
    ckpts = sorted(p.name for p in d.glob("checkpoint-*"))
    return (
        (d / "notes.txt").read_text() == "mine"
        and rec["config"]["max_steps"] == 2
        and ckpts == ["checkpoint-1", "checkpoint-2"]
    )


SFT_ROWS = [
    Row(
        "typo in a keyword",
        lambda c: _train(c, lerning_rate=1e-3),
        Raises(CourseError, "'lerning_rate' (did you mean 'learning_rate'?)", _no_output),
        "4",
        True,
    ),
    Row(
        "typo in a config dict",
        lambda c: _train(c, config={"lerning_rate": 1e-3}),
        Raises(CourseError, "did you mean 'learning_rate'", _no_output),
        "4",
        True,
    ),
    Row(
        "TRL's name for a setting",
        lambda c: _train(c, per_device_train_batch_size=8),
        Raises(CourseError, "TRL's name: use 'batch_size'", _no_output),
        "4",
        True,
    ),
    Row(
        "transformers 4's evaluation_strategy",
        lambda c: _train(c, evaluation_strategy="steps"),
        Raises(CourseError, "renamed eval_strategy", _no_output),
        "4",
        True,
    ),
    Row(
        "max_seq_length 0",
        lambda c: _train(c, max_seq_length=0),
        Raises(CourseError, "max_seq_length must be a positive int"),
        "",
        True,
    ),
    Row(
        "learning_rate NaN",
        lambda c: _train(c, learning_rate=math.nan),
        Raises(CourseError, "learning_rate must be a number > 0"),
        "",
        True,
    ),
    Row(
        "empty dataset",
        lambda c: _train(c, data=[]),
        Raises(CourseError, "dataset is empty", _no_output),
        "small",
        True,
    ),
    Row(
        "empty eval dataset",
        lambda c: _train(c, eval_dataset=[]),
        Raises(CourseError, "eval_dataset is empty", _no_output),
        "small",
        True,
    ),
    Row(
        "records without instruction/response",
        lambda c: _train(c, data=[{"text": "hello"}]),
        Raises(CourseError, "columns"),
    ),
    Row(
        "a file name instead of records",
        lambda c: _train(c, data="train.jsonl"),
        Raises(CourseError, "must be a list of records"),
        "",
        True,
    ),
    Row(
        "no model",
        lambda c: sft.train_sft_stage(None, RECS, c.fixtures["tok"], output_dir=c.path / "run", **QUICK),
        Raises(CourseError, "model must be a loaded model", _no_output),
        "",
        True,
    ),
    Row(
        "output_dir holding another run",
        lambda c: _train(c),
        Raises(CourseError, "holds another run (config.max_steps: 3 there, 2 now)", _run_unchanged),
        "3",
        True,
        _copy_other_run,
    ),
    Row(
        "output_dir holding another run, overwrite_output_dir=True",
        lambda c: _train(c, overwrite_output_dir=True),
        _overwritten,
        "3",
        True,
        _copy_other_run,
    ),
    Row(
        "resume into another run's folder",
        lambda c: _train(c, resume_from_checkpoint=True),
        Raises(CourseError, "holds another run", _run_unchanged),
        "3",
        True,
        _copy_other_run,
    ),
    Row(
        "resume from another run's checkpoint",
        lambda c: _train(c, "new", resume_from_checkpoint=c.fixtures["other_run"] / "checkpoint-3"),
        Raises(CourseError, "belongs to another run (config.max_steps: 3 there"),
        "3",
        True,
    ),
    Row(
        "resume with no checkpoint",
        lambda c: _train(c, resume_from_checkpoint=True),
        Raises(CourseError, "holds no complete checkpoint"),
        "3",
        True,
    ),
    Row(
        "resume from a missing folder",
        lambda c: _train(c, resume_from_checkpoint=c.path / "nope"),
        Raises(CourseError, "no such checkpoint folder"),
        "3",
        True,
    ),
    Row(
        "overwrite and resume together",
        lambda c: _train(c, overwrite_output_dir=True, resume_from_checkpoint=True),
        Raises(CourseError, "give one or the other"),
        "3",
        True,
    ),
    Row(
        "output_dir is a file",
        lambda c: _train(c, "f.txt"),
        Raises(CourseError, "is a file"),
        "3",
        True,
        lambda c: write(c.path / "f.txt", "x"),
    ),
    Row(
        "the same run again: allowed",
        lambda c: (_train(c), json.loads((c.path / "run" / "log_history.json").read_text())["log_history"]),
        lambda r, c: any("loss" in h for h in r[1]),
        "3",
        False,
        lambda c: _train(c),
    ),
    Row(
        "output_dir holding only other files: kept",
        lambda c: _train(c),
        lambda m, c: (c.path / "run" / "notes.txt").read_text() == "mine",
        "3",
        False,
        lambda c: write(c.path / "run" / "notes.txt", "mine"),
    ),
]


@pytest.mark.parametrize("row", params(SFT_ROWS))
def test_sft(row, ctx, tok, other_run):
    ctx.fixtures.update(tok=tok, other_run=other_run)
    ctx.monkeypatch.chdir(ctx.path)  # the default output_dir, if a row reaches it, stays in the temporary folder
    run_row(row, ctx)


# ------------------------------------------------------------------------------------------------ reward, rankings
def _rank(scores, responses=("a", "b")):
    return preferences.expand_rankings(
        [{"prompt": "P", "responses": list(responses) if isinstance(responses, tuple) else responses, "scores": scores}]
    )


RANKING_ROWS = [
    Row(
        "scores as strings ['10', '9']",
        lambda c: _rank(["10", "9"]),
        Raises(CourseError, "scores[0] is '10' (str)"),
        "8",
        True,
    ),
    Row("a NaN score", lambda c: _rank([math.nan, 1]), Raises(CourseError, "scores[0] is nan"), "8", True),
    Row("a null score", lambda c: _rank([None, 1]), Raises(CourseError, "scores[0] is None"), "8", True),
    Row("a bool score", lambda c: _rank([True, 1]), Raises(CourseError, "scores[0] is True (bool)"), "8", True),
    Row(
        "a string in place of the responses list",
        lambda c: _rank([1, 2], "ab"),
        Raises(CourseError, "'responses' must be a list"),
        "8",
        True,
    ),
    Row(
        "a string score in a file names its line",
        lambda c: preferences.load_preferences(
            write(
                c.path / "p.jsonl",
                '{"prompt": "P", "chosen": "a", "rejected": '
                '"b"}\n{"prompt": "P", "responses": ["a", "b"], "scores": ["10", "9"]}\n',
            )
        ),
        Raises(CourseError, "p.jsonl:2: scores[0] is '10'"),
        "8",
        True,
    ),
    Row("3 responses, 2 scores", lambda c: _rank([1, 2], ("a", "b", "c")), Raises(CourseError, "3 responses but 2")),
    Row(
        "a tie is dropped and counted, chosen scored higher",
        lambda c: _rank([3, 1, 1], ("a", "b", "c")),
        lambda r, c: (
            r[1]["pairs"] == 2
            and r[1]["ties_dropped"] == 1
            and all(p["gold_chosen"] > p["gold_rejected"] for p in r[0])
        ),
    ),
    Row("all responses tie", lambda c: _rank([1, 1]), Raises(CourseError, "prompt has no pairs")),
    Row(
        "a pair with chosen == rejected",
        lambda c: preferences.validate_preferences([{"prompt": "p", "chosen": "a", "rejected": "a "}]),
        Raises(CourseError, "chosen == rejected"),
    ),
    Row("no pairs at all", lambda c: preferences.validate_preferences([]), Raises(CourseError, "no preference pairs")),
    Row(
        "RewardConfig typo",
        lambda c: reward_training.reward_config(lerning_rate=1e-3),
        Raises(CourseError, "'lerning_rate' (did you mean 'learning_rate'?)"),
        "4",
        True,
    ),
    Row(
        "RewardConfig TRL name",
        lambda c: reward_training.reward_config(per_device_train_batch_size=8),
        Raises(CourseError, "TRL's name: use 'batch_size'"),
        "4",
        True,
    ),
    Row(
        "RewardConfig learning_rate -1",
        lambda c: reward_training.reward_config(learning_rate=-1),
        Raises(CourseError, "learning_rate must be a number > 0"),
        "",
        True,
    ),
]


@pytest.mark.parametrize("row", params(RANKING_ROWS))
def test_reward_and_rankings(row, ctx):
    run_row(row, ctx)


# ------------------------------------------------------------------------------------------------ DPO / PPO configs
CONFIG_ROWS = [
    Row(
        "DPOConfig typo",
        lambda c: dpo.DPOConfig.from_overrides(betta=0.5),
        Raises(CourseError, "did you mean 'beta'"),
        "4",
        True,
    ),
    Row("DPOConfig beta -1", lambda c: dpo.DPOConfig(beta=-1), Raises(CourseError, "beta must be > 0"), "", True),
    Row(
        "DPOConfig beta NaN", lambda c: dpo.DPOConfig(beta=math.nan), Raises(CourseError, "beta must be > 0"), "", True
    ),
    Row(
        "train_dpo config dict typo, before any model is touched",
        lambda c: dpo.train_dpo(None, None, None, [], {"betta": 0.5}),
        Raises(CourseError, "did you mean 'beta'"),
        "4",
        True,
    ),
    Row(
        "PPOConfig typo",
        lambda c: ppo.PPOConfig.from_overrides(step=3),
        Raises(CourseError, "did you mean 'steps'"),
        "4",
        True,
    ),
    Row("PPOConfig steps 0", lambda c: ppo.PPOConfig(steps=0), Raises(CourseError, "steps must be a positive int")),
    Row(
        "PPOConfig batch_size 2.5",
        lambda c: ppo.PPOConfig(batch_size=2.5),
        Raises(CourseError, "batch_size must be a positive int"),
    ),
    Row(
        "train_ppo config dict typo, before any model is touched",
        lambda c: ppo.train_ppo(None, None, [], {"stpes": 2}),
        Raises(CourseError, "did you mean 'steps'"),
        "4",
        True,
    ),
]


@pytest.mark.parametrize("row", params(CONFIG_ROWS))
def test_dpo_ppo_configs(row, ctx):
    run_row(row, ctx)


# ------------------------------------------------------------------------------------------------ loaders
def _damaged(c):
    d = c.path / "broken"
    shutil.copytree(models.shipped_model_dir("tiny"), d)
    (d / "model.safetensors").write_bytes(b"not safetensors")
    return d


LOADER_ROWS = [
    Row("a near miss", lambda c: models.load_model("tny", device="cpu"), Raises(CourseError, "did you mean 'tiny'")),
    Row(
        "a missing path inside an existing folder is not a hub id",
        lambda c: models.load_model("runs/my_sft_model", device="cpu"),
        Raises(CourseError, "model directory 'runs/my_sft_model' does not exist"),
        "small",
        True,
        lambda c: (c.path / "runs").mkdir(),
    ),
    Row(
        "a missing './' path",
        lambda c: models.load_model("./missing_dir", device="cpu"),
        Raises(CourseError, "model directory './missing_dir' does not exist"),
    ),
    Row(
        "a missing './' path (tokenizer)",
        lambda c: models.load_tokenizer("./missing_dir"),
        Raises(CourseError, "does not exist"),
    ),
    Row(
        "a damaged .safetensors is named",
        lambda c: models.load_model(str(_damaged(c)), device="cpu"),
        Raises(CourseError, "broken/model.safetensors"),
        "small",
        True,
    ),
    Row(
        "a hub id while offline",
        lambda c: models.load_model("someorg/somemodel", device="cpu"),
        Raises(CourseError, "HF_HUB_OFFLINE is set"),
        "",
        False,
        lambda c: c.monkeypatch.setenv("HF_HUB_OFFLINE", "1"),
    ),
    Row("no name", lambda c: models.load_model(None, device="cpu"), Raises(CourseError, "non-empty string")),
    Row(
        "a reward model as a causal LM",
        lambda c: models.load_model("tiny-rm", device="cpu"),
        Raises(CourseError, "not a causal language model"),
        "",
        True,
    ),
    Row(
        "a near miss (reward model)",
        lambda c: reward.load_reward_model("tiny-r"),
        Raises(CourseError, "did you mean 'tiny-rm'"),
        "",
        True,
    ),
    Row(
        "the shipped model loads",
        lambda c: models.load_model("tiny", device="cpu"),
        lambda m, c: sum(p.numel() for p in m.parameters()) > 0,
    ),
]


@pytest.mark.parametrize("row", params(LOADER_ROWS))
def test_loaders(row, ctx):
    ctx.monkeypatch.chdir(ctx.path)
    run_row(row, ctx)


# ------------------------------------------------------------------------------------------------ CLI
def _main(c, *argv):
    "cli.main in-process: (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _fake_targets(c):
    "A module with an experiment and a demo that return 14 kB and more of JSON (NaN and numpy inside)."
    import numpy as np

    m = types.ModuleType("bad_input_targets")
    big = lambda: {"curve": [{"step": i, "kl": np.float32(i / 7), "gold": math.nan} for i in range(2000)]}
    m.experiment = lambda out_dir, seed, quick: big()
    m.run_demo = lambda out_dir, max_steps=None, seed=0: big()
    c.monkeypatch.setitem(sys.modules, "bad_input_targets", m)
    registry = importlib.import_module("instruct_course.experiments.registry")
    c.monkeypatch.setitem(registry.EXPERIMENTS, "fake", ("bad_input_targets:experiment", "a test experiment"))
    c.monkeypatch.setattr(cli, "DEMO", "bad_input_targets:run_demo")


def _whole_json(r, c):
    code, out, err = r
    return code == 0 and len(out) > 14000 and len(json.loads(out)["curve"]) == 2000


def _refused(code=2, phrase=""):
    return lambda r, c: r[0] == code and phrase in r[2] and "Traceback" not in r[2]


CLI_ROWS = [
    Row(
        "world export into a non-empty folder",
        lambda c: _main(c, "world", "export", c.path / "w", "--n-train", 4),
        lambda r, c: _refused(2, "--force")(r, c) and _unchanged(c),
        "2",
        True,
        _old_export,
    ),
    Row(
        "world export --force",
        lambda c: _main(c, "world", "export", c.path / "w", "--n-train", 4, "--n-eval", 1, "--n-docs", 5, "--force"),
        lambda r, c: r[0] == 0 and json.loads(r[1])["train"] > 0 and (c.path / "w" / "notes.txt").exists(),
        "2",
        True,
        _old_export,
    ),
    Row(
        "world export through a file: exit 2, no traceback",
        lambda c: _main(c, "world", "export", write(c.path / "f.txt", "x") / "w"),
        _refused(2, "is a file, not a folder"),
        "2",
        True,
    ),
    Row(
        "demo --steps 0",
        lambda c: _main(c, "demo", "--steps", 0),
        _refused(2, "must be a positive integer"),
        "small",
        True,
    ),
    Row(
        "demo --help states the real default",
        lambda c: _main(c, "demo", "--help"),
        lambda r, c: r[0] == 0 and "default 1400" in " ".join(r[1].split()),
        "small",
        True,
    ),
    Row(
        "experiment: the whole JSON, never cut",
        lambda c: _main(c, "experiment", "fake", "--out", c.path / "o"),
        _whole_json,
        "7",
        True,
        _fake_targets,
    ),
    Row(
        "demo --json: the whole JSON, never cut",
        lambda c: _main(c, "demo", "--json", "--out", c.path / "o"),
        _whole_json,
        "7",
        True,
        _fake_targets,
    ),
    Row("unknown experiment", lambda c: _main(c, "experiment", "no-such"), _refused(2, "invalid choice")),
    Row("unknown benchmark", lambda c: _main(c, "bench", "no-such"), _refused(2, "invalid choice")),
    Row(
        "grade a missing notebook --json: JSON on stdout",
        lambda c: _main(c, "grade", c.path / "missing.ipynb", "--json"),
        lambda r, c: r[0] == 2 and json.loads(r[1])["exit_code"] == 2 and "no such notebook" in r[2],
        "small",
        True,
    ),
]


@pytest.mark.parametrize("row", params(CLI_ROWS))
def test_cli(row, ctx):
    run_row(row, ctx)


# ------------------------------------------------------------------------------------------------ grader
def _warmup(c, *cells):
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(x) for x in cells], metadata={"instruct_course": {"exercise": "00_warmup"}}
    )
    nbformat.write(nb, str(c.path / "w.ipynb"))
    return c.path / "w.ipynb"


def _grade(c, *flags):
    nb = _warmup(c, "# PART: q1\nsquares = [i * i for i in range(1, 11)]")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = grader.grade_main([str(nb), *flags, "--json"])
    return code, out.getvalue(), err.getvalue()


def _limit_refused(flag):
    return lambda r, c: (
        r[0] == 2 and f"{flag} must be a finite number of seconds" in r[2] and json.loads(r[1])["exit_code"] == 2
    )


GRADER_ROWS = [
    *[
        Row(f"{flag} {v}", lambda c, flag=flag, v=v: _grade(c, f"{flag}={v}"), _limit_refused(flag), "5", True)
        for flag, v in (
            ("--timeout-cell", "inf"),
            ("--timeout-total", "nan"),
            ("--timeout-total", "-inf"),
            ("--timeout-cell", "0"),
            ("--timeout-total", "soon"),
        )
    ],
    Row("a folder, not a notebook", lambda c: grader.grade_notebook(c.path), Raises(CourseError, "is a directory")),
    Row(
        "a text file named .ipynb",
        lambda c: grader.grade_notebook(write(c.path / "t.ipynb", "print(1)")),
        Raises(CourseError, "not a Jupyter notebook"),
    ),
    Row(
        "a notebook of no exercise",
        lambda c: grader.grade_notebook(
            nbformat.write(
                nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), str(c.path / "m.ipynb")
            )
            or c.path / "m.ipynb"
        ),
        Raises(CourseError, "which exercise"),
    ),
    Row(
        "the kernel dies in part 2: part 1 keeps its score",
        lambda c: grader.grade_notebook(
            _warmup(c, "# PART: q1\nsquares = [i * i for i in range(1, 11)]", "# PART: q2\nimport os\nos._exit(1)"),
            timeout_cell=60,
            timeout_total=120,
        ),
        lambda rep, c: rep["score"] == 1 and {p["name"]: p for p in rep["parts"]}["q1"]["passed"],
        "6",
        True,
    ),
]


@pytest.mark.parametrize("row", params(GRADER_ROWS))
def test_grader(row, ctx):
    ctx.monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_row(row, ctx)


ALL_ROWS = IO_ROWS + WORLD_ROWS + MASKING_ROWS + SFT_ROWS + RANKING_ROWS + CONFIG_ROWS + LOADER_ROWS + CLI_ROWS
ALL_ROWS += GRADER_ROWS


def test_every_numbered_case_has_a_row_that_failed_before():
    "Issue 14's eight numbered cases and its smaller ones each have at least one row that fails on the old code."
    cases = {r.case for r in ALL_ROWS if r.old_fails}
    assert cases >= {"1", "2", "3", "4", "5", "6", "7", "8", "small"}, cases
    assert len({r.id for r in ALL_ROWS}) == len(ALL_ROWS), "row ids must be unique"
