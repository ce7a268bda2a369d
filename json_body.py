"""JSON request bodies read safely: nesting is bounded before a recursive parser sees it.

`[` × 200,000 makes `json.loads` (and FastAPI's body parser) raise RecursionError; a job request
needs a few levels, so anything past MAX_DEPTH is refused with 422 before any parsing.
"""

from __future__ import annotations

import json
import re
from typing import Any

from errors import InvalidRequest, TooDeeplyNested

MAX_DEPTH = 32
# An escape pair (so `\"` is no quote), a quote, or a bracket; all other bytes are skipped.
_TOKENS = re.compile(rb'\\.|["\[\]{}]', re.S)


class DepthScanner:
    """Counts the nesting outside strings as a body arrives, chunk by chunk."""

    def __init__(self, limit: int = MAX_DEPTH) -> None:
        self.limit = limit
        self.depth = 0
        self.in_string = False
        self._carry = b""  # a backslash that ended the last chunk: its pair is in the next

    def feed(self, chunk: bytes) -> bool:
        """False once the nesting has gone deeper than the limit."""
        data, self._carry = self._carry + chunk, b""
        end = 0
        for m in _TOKENS.finditer(data):
            end, token = m.end(), m.group()
            if len(token) == 2 or (self.in_string and token != b'"'):
                continue
            if token == b'"':
                self.in_string = not self.in_string
            elif token in (b"[", b"{"):
                self.depth += 1
                if self.depth > self.limit:
                    return False
            else:
                self.depth -= 1
        if data.endswith(b"\\") and end < len(data):
            self._carry = b"\\"
        return True


def too_deep(source: str) -> TooDeeplyNested:
    return TooDeeplyNested(source, MAX_DEPTH)


def loads(raw: bytes, source: str = "The request body") -> Any:
    """Parse JSON, refusing (422) what is not JSON or is nested deeper than MAX_DEPTH."""
    if not DepthScanner().feed(raw):
        raise too_deep(source)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{source} is not valid JSON: {exc}") from None


def is_json(content_type: str) -> bool:
    """What FastAPI parses as JSON: no Content-Type, application/json or application/*+json."""
    ct = content_type.split(";")[0].strip().lower()
    return ct in ("", "application/json") or (
        ct.startswith("application/") and ct.endswith("+json")
    )
