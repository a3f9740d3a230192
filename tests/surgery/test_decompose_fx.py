"""torch.fx decomposition of models with no registered decomposer."""

import pytest
import torch
from torch import nn

from earlyexit import MultiExitModel, backbones, decompose, list_cut_points

pytestmark = pytest.mark.fx


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small forwards: one thread avoids oversubscribing a shared CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        y = self.conv_b(self.act(self.conv_a(x)))
        x = self.act(x + y)
        return self.fc(self.pool(x).flatten(1))


def test_cut_points_exclude_skip_connections():
    points = list_cut_points(Residual())
    assert "stem" in points and "pool" in points
    assert "conv_a" not in points and "conv_b" not in points


def test_cut_through_skip_connection_names_offending_node():
    with pytest.raises(ValueError, match=r"skip connection.*'stem'.*'add'"):
        decompose(Residual(), cut_points=["conv_a"], input_shape=(3, 8, 8))


def test_unknown_and_unordered_cut_points():
    with pytest.raises(ValueError, match="valid cut points: .*stem"):
        decompose(Residual(), cut_points=["nope"], input_shape=(3, 8, 8))
    points = list_cut_points(Residual())
    with pytest.raises(ValueError, match="graph order"):
        decompose(Residual(), cut_points=[points[-2], points[0]], input_shape=(3, 8, 8))
    with pytest.raises(ValueError, match="input_shape"):
        decompose(Residual(), cut_points=["stem"])
    with pytest.raises(ValueError, match="granularity"):
        decompose(Residual(), input_shape=(3, 8, 8), granularity="layer")
    with pytest.raises(ValueError, match="max_blocks"):
        decompose(Residual(), input_shape=(3, 8, 8), max_blocks=0)


def test_default_blocks_of_flat_model():
    torch.manual_seed(0)
    model = Residual().eval()
    seq = decompose(model, input_shape=(3, 8, 8))
    assert seq.names == ["stem", "act"]  # conv_a/conv_b sit inside the skip connection
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(seq(x), model(x))


def test_max_blocks_merges_registered_blocks():
    model = backbones.create("resnet20", num_classes=10).eval()
    seq = decompose(model, max_blocks=3)
    assert len(seq) == 3 and seq.names[-1] == decompose(model).names[-1]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(seq(x), model(x))


def test_max_blocks_keeps_evenly_spread_block_ends():
    """Registered blocks are merged and fx cut points thinned to the same ends."""
    model = backbones.create("resnet20", num_classes=10).eval()
    full = decompose(model).names
    assert len(full) == 10
    # ends of 4 runs of about 10 / 4 blocks: round(2.5), round(5), round(7.5), 10
    assert decompose(model, max_blocks=4).names == [full[i - 1] for i in (2, 5, 8, 10)]
    flat = nn.Sequential(*[nn.Linear(4, 4) for _ in range(11)]).eval()
    cuts = decompose(flat, input_shape=(4,)).names
    assert len(cuts) == 10  # the 11th layer is the classifier
    thinned = decompose(flat, input_shape=(4,), max_blocks=4)
    assert thinned.names == [cuts[i - 1] for i in (2, 5, 8, 10)]
    x = torch.randn(3, 4)
    with torch.no_grad():
        torch.testing.assert_close(thinned(x), flat(x))


@pytest.mark.slow
def test_surgery_does_not_import_backbones():
    import subprocess
    import sys

    code = (
        "import sys, torch, torchvision, earlyexit.surgery as s\n"
        "m = torchvision.models.resnet18(num_classes=3)\n"
        "print(len(s.decompose(m, input_shape=(3, 32, 32))))\n"
        "print(any(k.startswith('earlyexit.backbones') for k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["9", "False"]


def test_fx_blocks_equal_model():
    torch.manual_seed(0)
    model = Residual().eval()
    points = list_cut_points(model)
    cuts = ["stem", points[points.index("pool") - 1]]
    seq = decompose(model, cut_points=cuts, input_shape=(3, 8, 8))
    assert len(seq) == 2 and seq.block_info[1].output_shape == (8, 8, 8)
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(seq(x), model(x))
        mm = MultiExitModel(seq).eval()
        torch.testing.assert_close(mm(x)[-1], model(x))
    assert mm.heads["1"](torch.randn(2, 8, 8, 8)).shape == (2, 4)


def test_fx_on_torchvision_resnet():
    torch.manual_seed(0)
    model = backbones.create("tv:resnet18", num_classes=10).eval()
    points = list_cut_points(model)
    cuts = [
        p
        for p in points
        if p
        in ("maxpool", "layer1.1.relu_1", "layer2.1.relu_1", "layer3.1.relu_1", "layer4.1.relu_1")
    ]
    assert len(cuts) == 5, points
    assert "layer1.0.conv1" not in points  # inside a residual block
    seq = decompose(model, cut_points=cuts, input_shape=(3, 64, 64))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(seq(x), model(x), rtol=0, atol=1e-5)
    assert [b.output_shape[0] for b in seq.block_info] == [64, 64, 128, 256, 512]


def test_registering_a_class_twice_replaces_its_decomposer():
    from earlyexit.surgery import Decomposition, register_decomposer
    from earlyexit.surgery.decompose import _DECOMPOSERS

    class Twice(nn.Sequential):
        pass

    try:
        for n_blocks in (1, 2):

            @register_decomposer(Twice)
            def _split(m, n=n_blocks):
                return Decomposition([(str(i), m[i]) for i in range(n)], m[n:])

        net = Twice(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        assert len(decompose(net, input_shape=(4,))) == 2
    finally:
        _DECOMPOSERS.pop(Twice, None)
