"""`ansflow init`: a commented starter pipeline that `ansflow validate` accepts."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ansflow.errors import UsageError


def starter_text() -> str:
    return files("ansflow").joinpath("data/starter.yml").read_text(encoding="utf-8")


def write_starter(path: Path, force: bool = False) -> None:
    """Write the starter; an existing file is kept unless `force` (SPEC: never overwrite)."""
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a file name such as {path / 'ansflow.yml'}")
    if path.exists() and not force:
        raise UsageError(f"{path} already exists; use --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = "w" if force else "x"
        with path.open(mode, encoding="utf-8") as handle:
            handle.write(starter_text())
    except FileExistsError:
        raise UsageError(f"{path} already exists; use --force to overwrite it") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
