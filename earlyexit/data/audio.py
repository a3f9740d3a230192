"""Audio clips with a labels CSV, turned into VGGish log-mel patches."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from earlyexit.data.datasets import Splits
from earlyexit.data.spec import DatasetNotFoundError, stratified_split

__all__ = ["AUDIO_SUFFIXES", "audio_examples", "audio_splits", "read_audio_labels"]

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".aiff", ".aif", ".mp3")


def read_audio_labels(csv_path: str | Path) -> list[tuple[str, str, str | None]]:
    """Read an audio labels CSV: ``filename,label[,split]``, header optional.

    Args:
        csv_path: the CSV file.

    Returns:
        ``(filename, label, split or None)`` rows, in file order.

    Raises:
        DatasetNotFoundError: if the file is missing.
        ValueError: if a row is malformed or a split is not train/test.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetNotFoundError(
            f"audio labels CSV not found: {csv_path}. Write one row per clip, "
            "'filename,label' (optionally a third column 'split' = train|test), "
            "with file names relative to the audio directory."
        )
    rows: list[tuple[str, str, str | None]] = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if lineno == 1 and row[0].lower() == "filename":
                continue
            if len(row) not in (2, 3) or not row[0] or not row[1]:
                raise ValueError(
                    f"{csv_path}:{lineno}: expected 'filename,label[,split]', got {row}"
                )
            split = row[2].lower() if len(row) == 3 and row[2] else None
            if split is not None and split not in ("train", "test"):
                raise ValueError(
                    f"{csv_path}:{lineno}: split must be 'train' or 'test', got {split!r}"
                )
            rows.append((row[0], row[1], split))
    if not rows:
        raise ValueError(f"{csv_path} lists no audio files")
    return rows


def audio_examples(path: Path) -> torch.Tensor:
    """Decode one clip with soundfile and turn it into VGGish log-mel patches."""
    import soundfile as sf

    from earlyexit.backbones.vggish import waveform_to_examples

    if not path.is_file():
        raise DatasetNotFoundError(f"audio file listed in the labels CSV is missing: {path}")
    try:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as err:  # soundfile.LibsndfileError derives from RuntimeError
        raise ValueError(f"cannot decode audio file {path}: {err}") from err
    waveform = torch.from_numpy(np.ascontiguousarray(wave.T))  # [channels, samples]
    if waveform.shape[1] < rate:  # a clip shorter than 1 s still gives one 0.96 s patch
        waveform = torch.nn.functional.pad(waveform, (0, rate - waveform.shape[1]))
    examples = waveform_to_examples(waveform, rate)
    if examples.ndim == 3:
        examples = examples.unsqueeze(1)
    return examples.float()


def audio_splits(
    root: Path,
    norm: dict[str, list[float]],
    *,
    labels_csv: Path | None,
    test_fraction: float,
    profile_fraction: float,
    seed: int,
) -> Splits:
    """Read the clips listed in a labels CSV and cut them into log-mel patches, per split.

    The test split is the CSV's ``split`` column when it has one, else a stratified
    share of the clips; the profiling split is carved out of the rest, by clip.

    Args:
        root: the audio directory.
        norm: per-channel normalization (1 channel).
        labels_csv: the CSV (default ``<root>/labels.csv``).
        test_fraction: share of each class's clips for the test split (no split column).
        profile_fraction: share of each class's remaining clips for profiling.
        seed: seed of the stratified splits.

    Returns:
        The splits (``TensorDataset`` s of ``[N, 1, 96, 64]`` patches).

    Raises:
        DatasetNotFoundError: if the directory, the CSV or a clip is missing.
        ValueError: for a malformed CSV, an undecodable clip or a normalization that is not 1-channel.
    """
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"audio dataset not found: {root} is not a directory. Put the audio files "
            f"({', '.join(AUDIO_SUFFIXES)}) there with a labels CSV "
            "'filename,label[,split]' (default <dir>/labels.csv). Nothing is downloaded."
        )
    rows = read_audio_labels(labels_csv or root / "labels.csv")
    class_names = sorted({label for _, label, _ in rows})
    label_of = {name: i for i, name in enumerate(class_names)}
    clip_labels = np.array([label_of[label] for _, label, _ in rows], dtype=np.int64)
    if any(split is not None for _, _, split in rows):
        is_test = np.array([split == "test" for _, _, split in rows])
        train_pool, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    else:
        train_pool, test_idx = stratified_split(clip_labels, test_fraction, seed)
    keep, prof = stratified_split(clip_labels[train_pool], profile_fraction, seed)
    if len(norm["mean"]) != 1:
        raise ValueError(
            f"normalization has {len(norm['mean'])} channel(s) but log-mel patches have 1"
        )
    mean = torch.tensor(norm["mean"]).view(-1, 1, 1)
    std = torch.tensor(norm["std"]).view(-1, 1, 1)

    def build(indices: np.ndarray) -> TensorDataset:
        patches, labels = [], []
        for i in indices:
            x = audio_examples(root / rows[i][0])
            patches.append(x)
            labels.append(torch.full((len(x),), int(clip_labels[i]), dtype=torch.long))
        if not patches:
            return TensorDataset(torch.empty(0, 1, 96, 64), torch.empty(0, dtype=torch.long))
        return TensorDataset((torch.cat(patches) - mean) / std, torch.cat(labels))

    train = build(train_pool[keep])
    return Splits(
        train=train,
        profile=build(train_pool[prof]),
        test=build(test_idx),
        class_names=class_names,
        input_shape=tuple(train.tensors[0].shape[1:]) if len(train) else (1, 96, 64),
        normalization=norm,
    )
