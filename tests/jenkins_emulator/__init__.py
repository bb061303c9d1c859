"""A Jenkins HTTP emulator for ansflow's tests (no real Jenkins can be installed here).

It is driven by the unchanged python-jenkins client over real HTTP on 127.0.0.1 and refuses
protocol misuse the way Jenkins does. See README.md beside this file for what is implemented and
which Jenkins documentation each part follows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .emulator import BuildRecord, JenkinsEmulator, StageRecord, running_emulator
from .jenkinsfile import JenkinsfileSyntaxError, parse_jenkinsfile

__all__ = [
    "BuildRecord",
    "JenkinsEmulator",
    "JenkinsfileSyntaxError",
    "StageRecord",
    "emulator_fixture",
    "parse_jenkinsfile",
    "running_emulator",
]


def emulator_fixture(**kwargs: Any) -> Callable[..., Iterator[JenkinsEmulator]]:
    """A pytest fixture yielding a started emulator, e.g. `jenkins = emulator_fixture()`.

    Assign the result to a module-level name (or in conftest.py); the name is the fixture's.
    """
    import pytest

    @pytest.fixture
    def _fixture() -> Iterator[JenkinsEmulator]:
        with running_emulator(**kwargs) as emu:
            yield emu

    return _fixture
