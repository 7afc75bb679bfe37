"experiments.ppo: the length-biased proxy, proxies by name, a misspelt run option refused before any work."

import pytest

from instruct_course.core import CourseError
from instruct_course.data.masking import format_prompt
from instruct_course.experiments.ppo import (
    OVEROPT_RUNS,
    OVEROPT_SETTINGS,
    LengthBiasedProxy,
    load_proxy,
    run_overoptimization,
    smooth,
)
from instruct_course.train.ppo import PPOConfig


def test_length_biased_proxy_adds_alpha_per_word(tiny_rm, splits):
    rm, rm_tok = tiny_rm
    proxy = LengthBiasedProxy(rm, rm_tok, alpha=0.5)
    recs = splits["train"][:2]
    texts = ["a b c", "a"]
    plain = rm.score([format_prompt(r["instruction"], r["input"]) for r in recs], texts, rm_tok)
    assert proxy(recs, texts) == pytest.approx([plain[0] + 1.5, plain[1] + 0.5], abs=1e-5)
    assert proxy.__name__ == "tiny-rm + 0.5·words"


def test_load_proxy_by_name_and_function():
    p, tok = load_proxy("length-biased:0.2")
    assert isinstance(p, LengthBiasedProxy) and p.alpha == 0.2 and tok is None
    fn = lambda recs, texts: [0.0] * len(texts)
    assert load_proxy(fn) == (fn, None)
    with pytest.raises(CourseError):
        load_proxy("no-such-reward-model")


def test_runs_are_valid_configs_and_bad_options_fail_first(tmp_path):
    for settings in OVEROPT_SETTINGS.values():
        for kw in OVEROPT_RUNS.values():
            PPOConfig.from_overrides(**settings, **kw)
    with pytest.raises(CourseError, match=r"unknown PPOConfig setting\(s\): 'stpes' \(did you mean 'steps'\?\)"):
        run_overoptimization(tmp_path, quick=True, stpes=3)
    assert not list(tmp_path.iterdir())  # nothing was written


def test_smooth_skips_nan():
    assert smooth([1.0, 3.0, float("nan"), 5.0], window=2) == [1.0, 2.0, 3.0, 5.0]
