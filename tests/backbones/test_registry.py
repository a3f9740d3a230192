import math

import pytest
import torch

from earlyexit import backbones, decompose
from earlyexit.backbones.vggish import NUM_BANDS, waveform_to_examples


def test_list_backbones_pattern():
    assert backbones.list_backbones("resnet*") == [
        "resnet110",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
    ]
    assert "timm:efficientnet_b0" in backbones.list_backbones("timm:*")
    assert backbones.list_backbones("nothing*") == []


@pytest.mark.parametrize(
    ("name", "blocks"),
    [
        ("resnet20", 10),
        ("resnet32", 16),
        ("resnet110", 55),
        ("vggish", 4),
        ("timm:efficientnet_b0", 8),
        ("tv:resnet18", 9),
        ("tv:resnet50", 17),
    ],
)
def test_block_counts(name, blocks):
    model = backbones.create(name, num_classes=10, in_chans=1 if name == "vggish" else 3)
    shape = (1, 96, 64) if name == "vggish" else (3, 64, 64)
    assert len(decompose(model, input_shape=shape)) == blocks


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="resnet20"):
        backbones.create("resnet21")
    with pytest.raises(ValueError, match="unknown"):
        backbones.create("tv:not_a_model")


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_class_count(bad):
    with pytest.raises(ValueError, match="num_classes"):
        backbones.create("resnet20", num_classes=bad)
    with pytest.raises(TypeError):
        backbones.create("resnet20", num_classes=2.5)


def test_adapters_accept_unlisted_names_and_channels():
    model = backbones.create("tv:resnet34", num_classes=5, in_chans=1)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 5
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 5)
    with pytest.raises(ValueError, match="unknown timm model"):
        backbones.create("timm:not_a_timm_model")


def test_vggish_takes_one_channel_log_mel_by_default():
    model = backbones.create("vggish", num_classes=4)
    assert model.features[0][0].in_channels == 1
    assert model.earlyexit_input_shape == (1, 96, 64)
    patches = waveform_to_examples(torch.zeros(16000), 16000)
    assert model.eval()(patches).shape == (1, 4)
    assert backbones.create("vggish", in_chans=3).features[0][0].in_channels == 3


def test_cifar_resnet_depth_must_be_6n_plus_2():
    from earlyexit.backbones.cifar_resnet import CifarResNet

    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(depth=21)


def test_block_info_matches_independent_count():
    seq = decompose(backbones.create("resnet20", num_classes=10))
    stem = seq.block_info[0]
    assert stem.output_shape == (16, 32, 32)
    assert stem.output_bits == 32 * 16 * 32 * 32
    assert stem.macs == 16 * 32 * 32 * 3 * 3 * 3  # conv MACs; BN/ReLU count none
    assert stem.params == 16 * 3 * 9 + 2 * 16
    # a stride-2 block with option-A shortcut: two convs
    b = seq.block_info[4]
    assert b.output_shape == (32, 16, 16)
    assert b.macs == 32 * 16 * 16 * 16 * 9 + 32 * 16 * 16 * 32 * 9


def test_vggish_front_end_shapes_and_pitch():
    sr = 16000
    t = torch.arange(3 * sr) / sr
    tone = torch.sin(2 * math.pi * 1000.0 * t)
    patches = waveform_to_examples(tone, sr)
    assert patches.shape == (3, 1, 96, NUM_BANDS)
    assert torch.isfinite(patches).all()
    # the loudest band is the HTK mel band whose centre is nearest 1 kHz
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731
    edges = torch.linspace(mel(125.0), mel(7500.0), NUM_BANDS + 2)
    centres = 700 * (10 ** (edges[1:-1] / 2595) - 1)
    expected = int((centres - 1000.0).abs().argmin())
    loudest = patches[0, 0].mean(0).argmax().item()
    assert abs(loudest - expected) <= 1
    # resampling: the same tone at 44.1 kHz lands in the same band
    t44 = torch.arange(44100) / 44100
    p44 = waveform_to_examples(torch.sin(2 * math.pi * 1000.0 * t44), 44100)
    assert p44.shape == (1, 1, 96, NUM_BANDS)
    assert abs(p44[0, 0].mean(0).argmax().item() - expected) <= 1
    # short clips pad to one patch; stereo is averaged
    assert waveform_to_examples(torch.zeros(2, 100), sr).shape == (1, 1, 96, NUM_BANDS)
    with pytest.raises(ValueError):
        waveform_to_examples(torch.zeros(100), 0)


@pytest.mark.parametrize("name", ["resnet20", "tv:resnet18", "timm:mobilenetv3_small_050"])
def test_adapt_loads_another_tasks_weights(name, tmp_path):
    """ImageNet-style weights (100 classes, RGB) into a 10-class, 1-channel model."""
    torch.manual_seed(0)
    src = backbones.create(name, num_classes=100, in_chans=3)
    path = tmp_path / "src.pt"
    torch.save(src.state_dict(), path)
    with pytest.raises(ValueError, match="mis-shaped"):
        backbones.create(name, num_classes=10, in_chans=1, weights=path)
    torch.manual_seed(1)
    fresh = backbones.create(name, num_classes=10, in_chans=1)
    torch.manual_seed(1)
    net = backbones.create(name, num_classes=10, in_chans=1, weights=path, adapt=True)
    theirs, mine, init = src.state_dict(), net.state_dict(), fresh.state_dict()
    adapted = [k for k in mine if mine[k].shape != theirs[k].shape]
    # the classifier (weight and bias) keeps its fresh initialization, the first conv is summed
    heads = [k for k in adapted if mine[k].shape[0] == 10]
    convs = [k for k in adapted if k not in heads]
    assert len(heads) == 2 and len(convs) == 1, adapted
    for k in heads:
        assert torch.equal(mine[k], init[k])
    assert torch.allclose(mine[convs[0]], theirs[convs[0]].sum(1, keepdim=True))
    for k in mine:
        if k not in adapted:
            assert torch.equal(mine[k], theirs[k]), k
    # and the adapted model runs on 1-channel inputs
    x = torch.rand(2, 1, *net.earlyexit_input_shape[1:])
    assert net.eval()(x).shape == (2, 10)


def test_adapt_still_refuses_another_architecture(tmp_path):
    path = tmp_path / "r32.pt"
    torch.save(backbones.create("resnet32", num_classes=100).state_dict(), path)
    with pytest.raises(ValueError, match="unexpected"):
        backbones.create("resnet20", num_classes=10, weights=path, adapt=True)
    with pytest.raises(ValueError, match="adapt=True needs weights"):
        backbones.create("resnet20", adapt=True)
