pytest_plugins = ["tests.ssh_fixtures"]

import subprocess  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from tests.clihelp import Cli  # noqa: E402


@pytest.fixture
def cli(tmp_path):
    """An `ansflow` runner working in tmp_path with its own state database."""
    return Cli(tmp_path)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; killed (by pid) if the test leaves them behind."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
