"""Built-in step types, one module each; importing this package registers them all."""

from ansflow.steps import (  # noqa: F401
    ansible,
    approval,
    build,
    fetch_code,
    jenkins,
    notify,
    security_scan,
    shell,
    test,
)
from ansflow.steps import deploy as deploy
