"""Secret values: read from the environment or a dotenv file, and masked everywhere they could leak.

Masking happens at the boundaries that write text out (events, error messages, stored arguments),
so no renderer or table has to remember to do it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from ansflow.errors import UsageError

MASK = "***"

#: Every secret value any Masker of this process was given, in UTF-8: where the runners may cut a
#: long line into pieces depends on them (see `safe_cut`). Only ever grows.
_known: frozenset[bytes] = frozenset()
_known_lock = threading.Lock()


def _remember(values: Iterable[str]) -> None:
    global _known
    with _known_lock:
        _known = _known | {v.encode("utf-8", "surrogateescape") for v in values if len(v) > 1}


def keep_back() -> int:
    """Bytes at the end of unfinished output that may be the start of a secret still arriving."""
    return max((len(v) for v in _known), default=1) - 1


def safe_cut(data: bytes | bytearray, limit: int) -> int:
    """Where to cut `data` into a first piece of at most `limit` bytes.

    The cut splits no UTF-8 character and no secret value. Masking happens later, one piece at a
    time, so a secret cut in two would be stored and shown in the clear. When `data` is output
    still arriving, it must hold `limit + keep_back()` bytes, so that every secret that could cross
    the cut is complete in it. Only a secret longer than a piece, or one that overlaps itself
    (`aaaa` in a run of a's), can leave no such cut: the piece then ends at `limit`.
    """
    if len(data) <= limit:
        return len(data)
    first = _utf8_cut(data, limit)
    cut = first
    moved = True
    while moved and cut > 0:
        moved = False
        for value in _known:
            start = data.find(value, max(0, cut - len(value) + 1), cut + len(value) - 1)
            if start >= 0:
                # NOTE: every match of this window starts before the cut and ends after it.
                cut = start
                moved = True
    return cut if cut > 0 else first


def pieces(line: bytes, limit: int) -> Iterator[bytes]:
    """A whole line in pieces of at most `limit` bytes, cut where `safe_cut` allows."""
    while len(line) > limit:
        cut = safe_cut(line, limit)
        yield line[:cut]
        line = line[cut:]
    yield line


def _utf8_cut(data: bytes | bytearray, limit: int) -> int:
    """The largest cut <= limit that is not inside a UTF-8 character (bytes 10xxxxxx follow it)."""
    cut = limit
    while cut > max(0, limit - 3) and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if (data[cut] & 0xC0) != 0x80 else limit


class Masker:
    """Replaces every occurrence of any secret value by ***."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._pattern: re.Pattern[str] | None = None
        self._values: set[str] = set()
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        for value in values:
            if not value:
                continue
            self._values.add(value)
            # NOTE: a multi-line secret (a key file) can reach a log one line at a time.
            for line in value.splitlines():
                if len(line.strip()) >= 4:
                    self._values.add(line)
        _remember(self._values)
        if self._values:
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def __bool__(self) -> bool:
        return bool(self._values)


def read_secrets(
    names: Iterable[str], secrets_file: Path | None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Values of the declared secrets; a missing one is an error naming it (exit 2)."""
    environ = os.environ if environ is None else environ
    from_file: dict[str, str] = {}
    if secrets_file is not None:
        from dotenv import dotenv_values

        if not secrets_file.is_file():
            raise UsageError(f"--secrets-file {secrets_file}: no such file")
        try:
            raw = dotenv_values(secrets_file, interpolate=False)
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--secrets-file {secrets_file}: cannot read it ({exc})") from None
        from_file = {k: v for k, v in raw.items() if v is not None}
    values: dict[str, str] = {}
    missing: list[str] = []
    for name in names:
        if name in from_file:
            values[name] = from_file[name]
        elif name in environ:
            values[name] = environ[name]
        else:
            missing.append(name)
    if missing:
        where = f" or in {secrets_file}" if secrets_file else " (or use --secrets-file FILE)"
        plural = "s" if len(missing) > 1 else ""
        raise UsageError(
            f"declared secret{plural} {', '.join(missing)} not set: export "
            f"{'them' if plural else 'it'} in the environment{where}"
        )
    return values
