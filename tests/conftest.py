"""Shared fixtures: an isolated hwsim cache per test session, so tests never touch ~/.cache."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide zoo/build cache: the zoo model is exported once for the whole run."""
    path = Path(os.environ.get("HWSIM_TEST_CACHE_DIR") or tmp_path_factory.mktemp("hwsim-cache"))
    os.environ["HWSIM_CACHE_DIR"] = str(path)
    # The calibrated host model fits itself to minutes of microbenchmarks (codegen/calibrate.py); tests that
    # time host builds record it as skipped. tests/test_hostmodel.py runs a calibration of its own.
    os.environ.setdefault("HWSIM_CALIBRATE", "0")
    # host builds are timed in fresh processes (hwsim/hosttiming.py), six by default: one is enough here
    os.environ.setdefault("HWSIM_TIMING_PASSES", "1")
    return path
