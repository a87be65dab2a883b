"""Run-name filters from user text that can never stall the process.

The Training Runs page takes its filter from the URL (`?filter=...`), so the
pattern is hostile input. Python's `re` backtracks: `(.*.*)*!` against a
19-character run name takes about 15 minutes, holding the GIL, and every
session of the dashboard freezes with it. Patterns here are compiled by RE2
(google-re2), whose matching time is linear in the name's length whatever
the pattern, with a length cap and a cap on the compiled program's memory.

Semantics are TensorBoard's run filter: a regular expression searched
anywhere in the name, case-sensitive, so plain text is a substring filter
and the empty filter keeps every run. RE2 covers the usual syntax (classes,
groups, alternation, anchors, `{m,n}` up to 1000, `(?i)`); it refuses the two
features that need backtracking, lookarounds and backreferences, and so do we,
with a message that says so. (The `regex` package's timeout is no substitute:
compiling `((a{1000}){1000}){1000}` with it exhausted this machine's memory.)
"""

from __future__ import annotations

from collections.abc import Iterable

import re2

MAX_FILTER_CHARS = 256       # far more than any run-name filter needs
MAX_PROGRAM_BYTES = 1 << 20  # RE2's budget for one compiled pattern (its default is 8 MB)

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every refused pattern to stderr
_OPTIONS.max_mem = MAX_PROGRAM_BYTES


class FilterError(ValueError):
    """A filter that cannot be used; `str(err)` says why, for the person who typed it."""


def compile_filter(text: str | None):
    """User text -> a compiled RE2 pattern (use `.search(name)`); FilterError if unusable."""
    text = text or ""
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"the filter is {len(text):,} characters long; the limit is {MAX_FILTER_CHARS}")
    try:
        return re2.compile(text, _OPTIONS)
    except re2.error as err:
        raise FilterError(_explain(err)) from None


def filter_names(text: str | None, names: Iterable[str]) -> list[str]:
    """The names the filter `text` finds a match in, in their order; FilterError if unusable."""
    pattern = compile_filter(text)
    return [name for name in names if pattern.search(name)]


def _explain(err: re2.error) -> str:
    reason = err.args[0].decode(errors="replace") if err.args and isinstance(err.args[0], bytes) else str(err)
    if any(f"invalid perl operator: {op}" in reason for op in ("(?=", "(?!", "(?<=", "(?<!")):
        return "lookahead and lookbehind are not supported (filters use RE2 syntax, which always runs fast)"
    if "invalid escape sequence: \\" in reason and reason.rstrip()[-1:].isdigit():
        return "backreferences such as \\1 are not supported (filters use RE2 syntax, which always runs fast)"
    if "pattern too large" in reason:
        return "the pattern compiles to more than RE2's limit; use a simpler one"
    return f"not a regular expression: {reason}"
