"""ansflow: a command-line pipeline runner.

The public Python API is small on purpose: `load` a pipeline file, `plan` it, and the errors. Heavy
modules are imported lazily so that `ansflow --help` starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ansflow.errors import AnsflowError, Diagnostic, LoadError

__version__ = "0.1.0"

__all__ = ["AnsflowError", "Diagnostic", "LoadError", "__version__", "load", "plan"]

if TYPE_CHECKING:
    from pathlib import Path

    from ansflow.loader import LoadedPipeline
    from ansflow.planner import Plan


def load(path: str | Path) -> LoadedPipeline:
    """Read and check a pipeline file; raises LoadError listing every problem found."""
    from ansflow.loader import load_file

    return load_file(path)


def plan(path: str | Path) -> Plan:
    """Load a pipeline file and turn it into an immutable Plan."""
    return load(path).plan()
