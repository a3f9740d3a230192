"""Fixtures for the export tests: one small model, real samples, plans."""

from __future__ import annotations

import pytest
import torch

from tests.export._models import make_model, make_plan, samples


@pytest.fixture(scope="session")
def model_and_data():
    return make_model()


@pytest.fixture(scope="session")
def model(model_and_data):
    return model_and_data[0]


@pytest.fixture(scope="session")
def verify_data(model_and_data) -> tuple[torch.Tensor, torch.Tensor]:
    return samples(model_and_data[1], "test", 192)


@pytest.fixture(scope="session")
def calibration_data(model_and_data) -> tuple[torch.Tensor, torch.Tensor]:
    return samples(model_and_data[1], "profile", 64)


@pytest.fixture(scope="session")
def plan(model, verify_data):
    return make_plan(model, (3, 10), verify_data[0])
