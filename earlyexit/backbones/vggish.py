"""VGGish (Hershey et al. 2017) and its log-mel front end.

VGGish takes 96x64 log-mel patches (0.96 s of 16 kHz audio, 10 ms hops, 64 mel
bands from 125 to 7500 Hz). Its 4 convolution groups are the 4 blocks; the fully
connected embedding (4096-4096-128) and our classifier are its final
classifying layers.
"""

from __future__ import annotations

import torch
from torch import nn

from earlyexit.backbones._registry import register_backbone
from earlyexit.surgery.decompose import Decomposition, register_decomposer

__all__ = ["VGGish", "LogMelFrontEnd", "waveform_to_examples", "SAMPLE_RATE"]

SAMPLE_RATE = 16000
NUM_FRAMES = 96  # frames per patch (0.96 s)
NUM_BANDS = 64
_WINDOW = 400  # 25 ms
_HOP = 160  # 10 ms
_N_FFT = 512
_LOG_OFFSET = 0.01


class LogMelFrontEnd(nn.Module):
    """16 kHz waveform -> VGGish log-mel patches ``[num_patches, 1, 96, 64]``.

    A clip shorter than one patch is zero-padded to one patch; the tail that does
    not fill a whole patch is dropped (as VGGish does).
    """

    def __init__(self) -> None:
        super().__init__()
        import torchaudio

        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=_N_FFT,
            win_length=_WINDOW,
            hop_length=_HOP,
            f_min=125.0,
            f_max=7500.0,
            n_mels=NUM_BANDS,
            power=1.0,
            center=False,
            mel_scale="htk",
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() == 2:
            waveform = waveform.mean(0)
        if waveform.dim() != 1:
            raise ValueError(
                f"expected a waveform [samples] or [channels, samples], got {tuple(waveform.shape)}"
            )
        min_len = _WINDOW + _HOP * (NUM_FRAMES - 1)
        # VGGish counts 1 + (len - 400) // 160 frames; the 512-point FFT frames need
        # 112 more samples, so pad them (and a short clip up to one patch) with zeros
        pad = max(0, min_len - waveform.numel()) + _N_FFT - _WINDOW
        waveform = nn.functional.pad(waveform, (0, pad))
        logmel = torch.log(self.mel(waveform.float()) + _LOG_OFFSET).T  # [frames, bands]
        n = logmel.shape[0] // NUM_FRAMES
        return logmel[: n * NUM_FRAMES].reshape(n, 1, NUM_FRAMES, NUM_BANDS)


_FRONT_END: LogMelFrontEnd | None = None


def waveform_to_examples(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Turn audio into VGGish input patches.

    Args:
        waveform: ``[samples]`` or ``[channels, samples]`` (channels are averaged).
        sample_rate: its sample rate in Hz; it is resampled to 16 kHz.

    Returns:
        ``[num_patches, 1, 96, 64]`` log-mel patches (at least one).

    Raises:
        ValueError: for a bad shape or sample rate.

    Example:
        >>> import torch
        >>> waveform_to_examples(torch.zeros(16000), 16000).shape
        torch.Size([1, 1, 96, 64])
    """
    global _FRONT_END
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    waveform = torch.as_tensor(waveform, dtype=torch.float32)
    if sample_rate != SAMPLE_RATE:
        import torchaudio.functional as AF

        waveform = AF.resample(waveform, sample_rate, SAMPLE_RATE)
    if _FRONT_END is None:
        _FRONT_END = LogMelFrontEnd()
    return _FRONT_END(waveform)


def _conv_group(in_ch: int, out_ch: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, 1, 1), nn.ReLU(inplace=True)]
    layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """VGGish with a classification layer on top of its 128-d embedding.

    Args:
        num_classes: number of classes.
        in_chans: input channels (1 for log-mel patches).
    """

    def __init__(self, num_classes: int = 527, in_chans: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_group(in_chans, 64, 1),
            _conv_group(64, 128, 1),
            _conv_group(128, 256, 2),
            _conv_group(256, 512, 2),
        )
        self.embeddings = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(512 * 6 * 4, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 128),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embeddings(self.features(x)))


@register_decomposer(VGGish)
def _decompose_vggish(model: VGGish) -> Decomposition:
    blocks = [(f"conv{i + 1}", group) for i, group in enumerate(model.features)]
    return Decomposition(blocks, nn.Sequential(*model.embeddings, model.classifier))


@register_backbone(
    "vggish",
    input_size=(NUM_FRAMES, NUM_BANDS),
    description="VGGish on 1x96x64 log-mel patches (4 blocks)",
    in_chans=1,
)
def vggish(num_classes: int = 527, in_chans: int = 1) -> VGGish:
    """VGGish for 1x96x64 log-mel patches."""
    return VGGish(num_classes, in_chans)
