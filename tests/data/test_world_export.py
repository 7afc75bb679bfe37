"Exporting the world: readable files, never overwriting by surprise, all or nothing."

import pytest

from instruct_course.core import CourseError, read_jsonl
from instruct_course.data import world_export
from instruct_course.data.world import SPLITS
from instruct_course.data.world_export import export_world, world_files


def test_export_world_writes_readable_files(tmp_path):
    counts = export_world(tmp_path, seed=1, n_train=5, n_eval=2, n_docs=20)
    for name in SPLITS:
        recs = read_jsonl(tmp_path / f"{name}.jsonl", required=["instruction", "input", "response", "task"])
        assert len(recs) == counts[name] > 0
    assert counts["pretrain_docs"] == 20 and (tmp_path / "pretrain.txt").read_text().strip()


def test_export_world_refuses_a_non_empty_folder_and_force_replaces_only_its_files(tmp_path):
    export_world(tmp_path, seed=1, n_train=5, n_eval=2, n_docs=20)
    (tmp_path / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(CourseError, match=r"not empty \(it holds heldout_families.jsonl.*--force"):
        export_world(tmp_path, seed=2, n_train=5, n_eval=2, n_docs=20)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # refused: nothing changed
    export_world(tmp_path, seed=2, n_train=5, n_eval=2, n_docs=20, force=True)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(after) == sorted(world_files() + ["notes.txt"]) and after["notes.txt"] == b"mine"
    assert after["train.jsonl"] != before["train.jsonl"]
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}.export-*"))  # no temporary folder left


def test_export_world_failure_leaves_the_target_as_it_was(tmp_path, monkeypatch):
    d = tmp_path / "w"
    export_world(d, seed=1, n_train=5, n_eval=2, n_docs=20)
    before = {p.name: p.read_bytes() for p in d.iterdir()}

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(world_export, "pretraining_text", full_disk)
    with pytest.raises(CourseError, match="cannot write the world to .*No space left on device"):
        export_world(d, seed=2, n_train=5, n_eval=2, n_docs=20, force=True)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no temporary folder, no *.tmp


@pytest.mark.parametrize(
    "target, phrase",
    [("file", "is a file, not a folder"), ("file/inside", "file is a file, not a folder"), ("/", "not empty")],
)
def test_export_world_unwritable_targets(tmp_path, target, phrase):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CourseError, match=phrase):
        export_world(target if target == "/" else tmp_path / target, n_train=2, n_eval=1, n_docs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_export_world_checks_its_numbers(tmp_path):
    for bad in (dict(n_docs="many"), dict(n_train=-1), dict(seed=1.5), dict(n_eval=True)):
        with pytest.raises(CourseError, match="must be a whole number >= 0"):
            export_world(tmp_path / "w", **bad)
    assert not (tmp_path / "w").exists()
