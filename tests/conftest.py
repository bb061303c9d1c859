pytest_plugins = ["tests.ssh_fixtures"]

import pytest  # noqa: E402

from tests.clihelp import Cli  # noqa: E402


@pytest.fixture
def cli(tmp_path):
    """An `ansflow` runner working in tmp_path with its own state database."""
    return Cli(tmp_path)
