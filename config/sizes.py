"""How a byte count reads for people, in the CLI and (as `bytes` in static/client.js) the GUI.

One rule, both places: decimal units (1 KB = 1000 B); below 1000 a whole number of bytes, else the
smallest unit that keeps the number under 1000 after rounding, with one decimal, halves rounded
up: 314,572,800 → "314.6 MB". tests/fixtures/sizes.json holds the table both are tested on.
"""

from __future__ import annotations

import math

UNITS = ("KB", "MB", "GB", "TB")


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    whole = math.floor(n + 0.5)  # as JavaScript's Math.floor(n + 0.5): the same float steps
    if whole < 1000:
        return f"{whole} B"
    for power, unit in enumerate(UNITS, start=1):
        size = 1000**power
        tenths = (whole * 10 + size // 2) // size  # integers: no binary rounding of halves
        if tenths < 10_000 or unit == UNITS[-1]:
            return f"{tenths // 10}.{tenths % 10} {unit}"
    raise AssertionError("unreachable")
