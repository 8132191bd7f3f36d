"""Fixtures of the multi-process tests: `processes` kills every worker of a module still running at its end."""

import pytest
from _subprocesses import Processes


@pytest.fixture(scope="module")
def processes():
    group = Processes()
    try:
        yield group
    finally:
        group.kill_all()
