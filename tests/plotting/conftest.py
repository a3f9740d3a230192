"""Shared by the plotting tests: a synthetic profile."""

from __future__ import annotations

import pytest

from earlyexit.planner.synthetic import synthetic_profile


@pytest.fixture(scope="module")
def prof():
    return synthetic_profile(8, num_samples=200, seed=3)
