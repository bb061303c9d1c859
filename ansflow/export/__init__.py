"""`ansflow export`: translate a pipeline into another CI system's file.

Each format is a module with `render(loaded) -> str`, looked up by name. What the target system
cannot express is listed as comments at the top of the output, never silently dropped.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ansflow.errors import UsageError

if TYPE_CHECKING:
    from ansflow.loader import LoadedPipeline

FORMATS = {
    "jenkinsfile": "ansflow.export.jenkinsfile",
    "gitlab-ci": "ansflow.export.gitlab_ci",
    "github-actions": "ansflow.export.github_actions",
}


def export(loaded: LoadedPipeline, fmt: str) -> str:
    """The pipeline in format `fmt`; an unknown format lists the known ones."""
    module_name = FORMATS.get(fmt)
    if module_name is None:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    module = importlib.import_module(module_name)
    text: str = module.render(loaded)
    return text
