"""Fixtures of the exercise tests: quick mode for a whole test module, and grading cached per module."""

import pytest
from grading_helpers import _grade, _quick

quick = pytest.fixture(scope="module")(_quick)
grade = pytest.fixture(scope="module")(_grade)
