"""core.run_filter: TensorBoard-like run filters from a URL that can never stall the process."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

from core.run_filter import MAX_FILTER_CHARS, FilterError, compile_filter, filter_names

NAMES = ["run-20261202-183000", "sweep/lr-1e-3", "sweep/lr-3e-4", "baseline", "Sweep-upper"]


def test_plain_text_is_a_substring_filter():
    assert filter_names("lr-", NAMES) == ["sweep/lr-1e-3", "sweep/lr-3e-4"]


def test_a_regex_is_searched_anywhere_and_is_case_sensitive():
    assert filter_names("^sweep/", NAMES) == ["sweep/lr-1e-3", "sweep/lr-3e-4"]
    assert filter_names(r"\d{8}", NAMES) == ["run-20261202-183000"]
    assert filter_names("(?i)^sweep", NAMES) == ["sweep/lr-1e-3", "sweep/lr-3e-4", "Sweep-upper"]
    assert filter_names("e-3$|line", NAMES) == ["sweep/lr-1e-3", "baseline"]


@pytest.mark.parametrize("empty", ["", None])
def test_the_empty_filter_keeps_every_run_in_order(empty):
    assert filter_names(empty, NAMES) == NAMES


def test_the_catastrophic_pattern_finishes_on_long_names():
    # With Python's re, one search of this 19-character name takes ~15 minutes (x3.3 per
    # character) holding the GIL; the names here are 60 characters. The subprocess and its
    # timeout only stop a hang from hanging the suite: RE2 answers in microseconds.
    code = ("from core.run_filter import filter_names; "
            "print(filter_names('(.*.*)*!', ['run-20261202-183000' * 3 + 'abc'] * 100))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_invalid_pattern_says_why():
    with pytest.raises(FilterError, match=r"not a regular expression: missing \)"):
        compile_filter("(")


@pytest.mark.parametrize("pattern", ["(?=.*lr)sweep", "(?!base)line", "(?<=sweep/)lr", "(?<!x)lr"])
def test_lookarounds_are_refused_with_the_reason(pattern):
    with pytest.raises(FilterError, match="lookahead and lookbehind are not supported"):
        compile_filter(pattern)


def test_backreferences_are_refused_with_the_reason():
    with pytest.raises(FilterError, match=r"backreferences such as \\1 are not supported"):
        compile_filter(r"(x+x+)+y\1")


def test_a_filter_over_the_length_cap_is_refused():
    compile_filter("a" * MAX_FILTER_CHARS)
    with pytest.raises(FilterError, match=f"{MAX_FILTER_CHARS + 1} characters long; the limit is {MAX_FILTER_CHARS}"):
        compile_filter("a" * (MAX_FILTER_CHARS + 1))


def test_a_pattern_that_compiles_to_a_huge_program_is_refused():
    # 1000 repeats of a class of every Unicode letter or digit: a program of many MB.
    with pytest.raises(FilterError, match="more than RE2's limit"):
        compile_filter(r"(\pL|\pN){1000}")


def test_a_repetition_over_1000_is_refused():
    with pytest.raises(FilterError, match="invalid repetition size"):
        compile_filter("((a{1000}){1000}){1000}")
