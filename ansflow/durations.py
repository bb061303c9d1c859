"""Durations as users write them (`90`, `30s`, `5m`, `1h30m`), parsed by pytimeparse2."""

from __future__ import annotations

import math

#: Longer than any sane step; also keeps timers far from the platform's overflow limits.
MAX_SECONDS = 366 * 24 * 3600


def parse_duration(value: object) -> float:
    """Seconds as a float; raises ValueError with a message meant for the user."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 90, 30s, 5m or 1h30m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        from pytimeparse2 import parse

        text = value.strip()
        parsed = parse(text) if text else None
        if parsed is None:
            raise ValueError(f"expected a duration like 90, 30s, 5m or 1h30m, got {value!r}")
        seconds = float(parsed.total_seconds() if hasattr(parsed, "total_seconds") else parsed)
    else:
        raise ValueError(f"expected a duration like 90, 30s, 5m or 1h30m, got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    if seconds > MAX_SECONDS:
        raise ValueError(f"a duration must be at most 366 days, got {value!r}")
    return seconds


def format_duration(seconds: float | None) -> str:
    """Short human form for tables and messages: 45ms, 1.25s, 12.3s, 30s, 4m05s, 5m, 1h02m."""
    if seconds is None:
        return "-"
    whole = float(seconds).is_integer()
    if seconds < 60 and not whole:
        if seconds < 1:
            return f"{seconds * 1000:.0f}ms"
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m" if secs == 0 else f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h" if minutes == 0 else f"{hours}h{minutes:02d}m"
