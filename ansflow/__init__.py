"""ansflow: a command-line pipeline runner.

The public Python API is small on purpose: `load` a pipeline file, `plan` it, and the errors. Heavy
modules are imported lazily so that `ansflow --help` starts fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ansflow.errors import AnsflowError, Diagnostic, LoadError

__version__ = "0.1.0"

# NOTE: pydantic looks for plugins by scanning every installed distribution's entry points, which
# costs more start-up time than building all of ansflow's models. ansflow uses none, so the scan
# is skipped while the models are built; `restore_environment` takes the variable back out so that
# steps inherit the user's environment unchanged.
_PLUGINS_VAR = "PYDANTIC_DISABLE_PLUGINS"
_plugins_var_added = _PLUGINS_VAR not in os.environ
if _plugins_var_added:
    os.environ[_PLUGINS_VAR] = "__all__"


def restore_environment() -> None:
    """Undo the start-up setting above (called once the models exist)."""
    global _plugins_var_added
    if _plugins_var_added:
        os.environ.pop(_PLUGINS_VAR, None)
        _plugins_var_added = False


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
