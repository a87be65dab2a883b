"""How deep and how many: a JSON body's shape, checked before anything parses it.

FastAPI parses a request body with `json.loads` before any validation runs, so
the body's *shape* costs memory and stack whatever the schema says: 20 MB of
`[{},{},...]` builds 6.7 M dicts (~430 MB), and 100,000 nested `[` end in a
RecursionError that FastAPI reports as a body "not UTF-8". `json_shape_problem`
scans the raw bytes (numpy, in blocks of BLOCK_BYTES, so ~12 MB of scratch
whatever the body's size) and names the first limit a body breaks; the server
answers that with a 422 before parsing. A real request here is depth 2 with
about ten values.

Strings are skipped exactly: escaped backslashes and quotes are removed
first, then quote parity says what is inside a string. A stray backslash
outside a string can mislead the scan after it, but the parser stops at that
byte, so nothing after it is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_DEPTH = 64          # nesting of arrays/objects; Python's json fails near 1000 (the recursion limit)
MAX_VALUES = 10_000     # arrays, objects and their members (commas + openings)
BLOCK_BYTES = 1 << 20

_QUOTE, _COMMA = ord('"'), ord(",")
_OPEN, _CLOSE = (ord("["), ord("{")), (ord("]"), ord("}"))
_MARKS = (b'"', b"[", b"]", b"{", b"}", b",")


@dataclass(frozen=True)
class JsonShapeProblem:
    code: str      # "json_too_deep" | "json_too_many_values"
    message: str   # for the person who sent the request


def json_shape_problem(body: bytes, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> JsonShapeProblem | None:
    """None if `body` stays within both limits (or is not JSON at all: the parser says so), else the problem."""
    in_string, depth, deepest, values = 0, 0, 0, 0
    start = 0
    while start < len(body):
        end = min(len(body), start + BLOCK_BYTES)
        while end < len(body) and body[end - 1] == 0x5C:  # never split a run of backslashes
            end += 1
        if not any(body.find(mark, start, end) >= 0 for mark in _MARKS):
            start = end  # base64 holds none of them: such a block costs six memchr calls
            continue
        block = body[start:end].replace(b"\\\\", b"").replace(b'\\"', b"")
        start = end
        chars = np.frombuffer(block, np.uint8)
        quotes = chars == _QUOTE
        inside = (np.cumsum(quotes, dtype=np.int32) + in_string) & 1  # 1 from an opening quote on
        outside = (inside == 0) & ~quotes
        opens = outside & ((chars == _OPEN[0]) | (chars == _OPEN[1]))
        closes = outside & ((chars == _CLOSE[0]) | (chars == _CLOSE[1]))
        levels = np.cumsum(opens.astype(np.int32) - closes, dtype=np.int32) + depth
        deepest = max(deepest, int(levels.max()))
        values += int(np.count_nonzero(opens)) + int(np.count_nonzero(outside & (chars == _COMMA)))
        in_string, depth = int(inside[-1]), int(levels[-1])
    if deepest > max_depth:
        return JsonShapeProblem("json_too_deep", f"The request body nests JSON {deepest:,} levels deep; "
                                f"the limit is {max_depth}. This API's requests nest 2 levels.")
    if values > max_values:
        return JsonShapeProblem("json_too_many_values", f"The request body holds {values:,} JSON values "
                                f"(arrays, objects and their members); the limit is {max_values:,}. "
                                "This API's requests hold about ten.")
    return None
