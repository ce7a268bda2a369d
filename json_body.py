"""JSON request bodies read safely: UTF-8 only, and nesting bounded before a recursive parser
sees it.

`[` × 200,000 makes `json.loads` (and FastAPI's body parser) raise RecursionError; a job request
needs a few levels, so anything past MAX_DEPTH is refused with 422 before any parsing. The depth is
counted on the decoded text: `json.loads(bytes)` would guess UTF-16 or UTF-32 from the NUL bytes,
where each `\\` pairs with the NUL after it and a scan of the raw bytes loses track of the strings.
So a body is JSON only as UTF-8 (RFC 8259), checked before it is scanned or parsed.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

from errors import InvalidRequest, TooDeeplyNested

MAX_DEPTH = 32
# An escape pair (so `\"` is no quote), a quote, or a bracket; all other characters are skipped.
_TOKENS = re.compile(r'\\.|["\[\]{}]', re.S)
BOM = "\ufeff"


def media_type(content_type: str | None) -> str:
    """`Application/JSON; charset=utf-8` → `application/json`."""
    return (content_type or "").split(";")[0].strip().lower()


def is_json(content_type: str) -> bool:
    """What FastAPI parses as JSON: no Content-Type, application/json or application/*+json."""
    ct = media_type(content_type)
    return ct in ("", "application/json") or (
        ct.startswith("application/") and ct.endswith("+json")
    )


def not_utf8(source: str) -> InvalidRequest:
    return InvalidRequest(
        f"{source} must be JSON encoded as UTF-8 (RFC 8259); it is not (UTF-16 or UTF-32, or "
        "bytes that are not text): save or send it as UTF-8"
    )


def too_deep(source: str) -> TooDeeplyNested:
    return TooDeeplyNested(source, MAX_DEPTH)


class DepthScanner:
    """Counts the nesting outside strings in decoded text, as it arrives piece by piece."""

    def __init__(self, limit: int = MAX_DEPTH) -> None:
        self.limit = limit
        self.depth = 0
        self.in_string = False
        self._carry = ""  # a backslash that ended the last piece: its pair is in the next

    def feed(self, text: str) -> bool:
        """False once the nesting has gone deeper than the limit."""
        data, self._carry = self._carry + text, ""
        end = 0
        for m in _TOKENS.finditer(data):
            end, token = m.end(), m.group()
            if len(token) == 2 or (self.in_string and token != '"'):
                continue
            if token == '"':
                self.in_string = not self.in_string
            elif token in ("[", "{"):
                self.depth += 1
                if self.depth > self.limit:
                    return False
            else:
                self.depth -= 1
        if data.endswith("\\") and end < len(data):
            self._carry = "\\"
        return True


class BodyGuard:
    """A JSON body checked chunk by chunk as it arrives: strictly UTF-8 (no NUL, which only
    UTF-16/32 text or a broken body has) and nested at most MAX_DEPTH levels. Raises the
    RequestError that says which."""

    def __init__(self, source: str = "The request body") -> None:
        self.source = source
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._depth = DepthScanner()

    def feed(self, chunk: bytes, final: bool = False) -> str:
        """The text of the chunk, once it is known to be UTF-8 and not too deep."""
        try:
            text = self._decoder.decode(chunk, final)
        except UnicodeDecodeError:
            raise not_utf8(self.source) from None
        if "\0" in text:
            raise not_utf8(self.source)
        if not self._depth.feed(text):
            raise too_deep(self.source)
        return text


def loads(raw: bytes, source: str = "The request body") -> Any:
    """Parse UTF-8 JSON, refusing (422) what is not UTF-8, not JSON, or nested deeper than
    MAX_DEPTH."""
    text = BodyGuard(source).feed(raw, final=True).removeprefix(BOM)
    try:
        return json.loads(text)
    except RecursionError:  # the scan above should have caught it; never a 500
        raise too_deep(source) from None
    except ValueError as exc:
        raise InvalidRequest(f"{source} is not valid JSON: {exc}") from None
