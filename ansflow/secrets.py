"""Secret values: read from the environment or a dotenv file, and masked everywhere they could leak.

Masking happens at the boundaries that write text out (events, error messages, stored arguments),
so no renderer or table has to remember to do it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from ansflow.errors import UsageError

MASK = "***"


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
