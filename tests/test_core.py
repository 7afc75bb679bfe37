"core: JSONL errors that name file and line, device choice."

import pytest
import torch

from instruct_course.core import CourseError, pick_device, read_jsonl, write_jsonl


def test_jsonl_errors_name_file_and_line(tmp_path):
    p = write_jsonl([{"instruction": "a", "response": "b"}], tmp_path / "x.jsonl")
    with open(p, "a") as f:
        f.write("not json\n")
    with pytest.raises(CourseError, match=r"x.jsonl:2"):
        read_jsonl(p)
    q = write_jsonl([{"instruction": "a"}], tmp_path / "y.jsonl")
    with pytest.raises(CourseError, match=r"y.jsonl:1: missing field 'response'"):
        read_jsonl(q, required=["instruction", "response"])


def test_device_choice():
    assert pick_device("cpu") == (torch.device("cpu"), torch.float32)
    with pytest.raises(CourseError):
        pick_device("tpu")
