"""Shared fixtures: backbones from the registry at test-friendly input sizes."""

from __future__ import annotations

import pytest
import torch

from earlyexit import backbones

# spatial sizes small enough for quick CPU tests; every backbone adapts to them
TEST_INPUT_SHAPE = {"vggish": (1, 96, 64)}
DEFAULT_SHAPE = {"tv": (3, 64, 64), "timm": (3, 64, 64), "cifar": (3, 32, 32)}


def input_shape_for(name: str) -> tuple[int, ...]:
    if name in TEST_INPUT_SHAPE:
        return TEST_INPUT_SHAPE[name]
    return DEFAULT_SHAPE[name.split(":")[0]] if ":" in name else DEFAULT_SHAPE["cifar"]


def make_backbone(name: str, num_classes: int = 10) -> tuple[torch.nn.Module, tuple[int, ...]]:
    shape = input_shape_for(name)
    torch.manual_seed(0)
    model = backbones.create(name, num_classes=num_classes, in_chans=shape[0])
    # an untrained network's eval-mode activations blow up with depth (BN running
    # statistics are 0/1); estimate them on random data so outputs look realistic
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, *shape))
    return model.eval(), shape


@pytest.fixture(params=backbones.list_backbones())
def backbone_name(request: pytest.FixtureRequest) -> str:
    return request.param


# One small trained-for-the-test model, real samples and a plan, shared by the
# export tests and the slicing tests (tests/export/_models.py builds them).
@pytest.fixture(scope="session")
def model_and_data():
    from tests.export._models import make_model

    return make_model()


@pytest.fixture(scope="session")
def model(model_and_data):
    return model_and_data[0]


@pytest.fixture(scope="session")
def verify_data(model_and_data) -> tuple[torch.Tensor, torch.Tensor]:
    from tests.export._models import samples

    return samples(model_and_data[1], "test", 192)


@pytest.fixture(scope="session")
def calibration_data(model_and_data) -> tuple[torch.Tensor, torch.Tensor]:
    from tests.export._models import samples

    return samples(model_and_data[1], "profile", 64)


@pytest.fixture(scope="session")
def plan(model, verify_data):
    from tests.export._models import make_plan

    return make_plan(model, (3, 10), verify_data[0])
