"""The arguments of a run, stored with it so that `ansflow resume` can run it again the same way."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunOptions:
    """Everything `ansflow run` was asked to do, apart from where output goes."""

    vars: dict[str, str] = field(default_factory=dict)
    only: tuple[str, ...] = ()
    from_step: str | None = None
    concurrency: int | None = None
    fail_fast: bool = False
    approve: tuple[str, ...] = ()
    secrets_file: str | None = None
    junit: str | None = None
    remote: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["only"] = list(self.only)
        data["approve"] = list(self.approve)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunOptions:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["only"] = tuple(known.get("only") or ())
        known["approve"] = tuple(known.get("approve") or ())
        known["vars"] = dict(known.get("vars") or {})
        return cls(**known)

    def approves(self, step_id: str, base_id: str) -> bool:
        return "all" in self.approve or step_id in self.approve or base_id in self.approve


def parse_vars(pairs: list[str]) -> dict[str, str]:
    """`--var key=value` pairs; a pair without `=` is a usage error."""
    from ansflow.errors import UsageError

    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--var {pair!r}: expected key=value")
        result[key] = value
    return result
