"""Shared by the Python suites (helm/, auth/): the real API server, once per session."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "py"))

from realparts import Cluster  # noqa: E402


@pytest.fixture(scope="session")
def cluster():
    started = Cluster()
    yield started
    started.close()
