"""Fixtures shared by the test files: the world's splits, the course tokenizer and the shipped models.

Under pytest-xdist (`make test-py` runs two workers) each worker, and every process it starts, uses one thread.
Tokenizer and splits are read-only and shared by the whole session; models are loaded once per test module, so a
test module that trains or changes one cannot affect another module."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test-py` runs two workers on two cores: one thread each, kernels too
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402

from instruct_course.data.world import make_splits  # noqa: E402
from instruct_course.models import load_model, load_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def splits():
    "The world's splits for seed 0 (train, heldout_instances, heldout_templates, heldout_families)."
    return make_splits(seed=0)


@pytest.fixture(scope="session")
def tok():
    "The course tokenizer (shared by tiny, tiny-sft and tiny-rm)."
    return load_tokenizer("tiny")


@pytest.fixture(scope="module")
def tiny():
    "The shipped base model, on the CPU, in fp32."
    return load_model("tiny", device="cpu")


@pytest.fixture(scope="module")
def tiny_sft():
    "The shipped SFT model, on the CPU, in fp32."
    return load_model("tiny-sft", device="cpu")


@pytest.fixture(scope="module")
def tiny_rm():
    "The shipped reward model and its tokenizer."
    from instruct_course.train.reward import load_reward_model

    return load_reward_model("tiny-rm")
