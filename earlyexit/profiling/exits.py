"""Accuracy, exit rates and calibration of every exit on the profiling split.

For a full-configuration model (an exit after every block) this computes, per
docs/spec.md: ``A_i`` (every sample forced through branch i), ``ER_i^T`` (the
fraction of all samples whose normalized entropy at branch i is below T, each
branch tested alone), and the per-sample record (entropy and correctness, N x S)
that the ``exact`` estimator replays. Optional calibration fits one softmax
temperature per exit on the same split (minimum negative log-likelihood).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from earlyexit.surgery.multi_exit import MultiExitModel, normalized_entropy

__all__ = [
    "ExitOutputs",
    "ExitStatistics",
    "collect_exit_outputs",
    "fit_temperatures",
    "exit_statistics",
]


@dataclass
class ExitOutputs:
    """Logits of every exit on a dataset: ``logits[i]`` is ``[S, C]`` for exit i+1."""

    logits: list[torch.Tensor]
    labels: torch.Tensor


@dataclass
class ExitStatistics:
    """What the profile records about exits (0-based arrays).

    Attributes:
        branch_accuracy: ``[N]``.
        exit_rate: ``[len(thresholds), N]``.
        entropy: ``[N, S]`` normalized entropies (after temperature).
        correct: ``[N, S]`` booleans.
        temperatures: ``[N]``.
    """

    branch_accuracy: np.ndarray
    exit_rate: np.ndarray
    entropy: np.ndarray
    correct: np.ndarray
    temperatures: np.ndarray


def collect_exit_outputs(
    model: MultiExitModel, batches: Iterable[Sequence[torch.Tensor]], progress: bool = False
) -> ExitOutputs:
    """Run ``model`` (in eval mode, without gradients) and keep every exit's logits.

    Args:
        model: a multi-exit model.
        batches: ``(inputs, labels)`` pairs, e.g. a DataLoader.
        progress: show a progress bar.

    Returns:
        The logits of every exit and the labels.

    Raises:
        ValueError: if there are no samples.
    """
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    per_exit: list[list[torch.Tensor]] = [[] for _ in model.exits]
    labels: list[torch.Tensor] = []
    try:
        with torch.inference_mode():
            for x, y in tqdm(batches, desc="exits", disable=not progress, leave=False):
                for k, logits in enumerate(model(x)):
                    per_exit[k].append(logits.float())
                labels.append(torch.as_tensor(y))
    finally:
        model.train(was_training)
    if not labels:
        raise ValueError("the profiling data holds no samples")
    return ExitOutputs([torch.cat(chunks) for chunks in per_exit], torch.cat(labels).long())


def fit_temperatures(outputs: ExitOutputs, max_iter: int = 100) -> np.ndarray:
    """Fit one temperature per exit minimizing the negative log-likelihood.

    Args:
        outputs: logits and labels from :func:`collect_exit_outputs`.
        max_iter: L-BFGS iterations per exit.

    Returns:
        ``[N]`` positive temperatures.

    Example:
        >>> import torch
        >>> y = torch.arange(100) % 2
        >>> logits = torch.nn.functional.one_hot(y, 2).float() * 10
        >>> logits[::4] = logits[::4].flip(1)  # overconfident and wrong on a quarter
        >>> float(fit_temperatures(ExitOutputs([logits], y))[0]) > 1.0
        True
    """
    temps = []
    for logits in outputs.logits:
        log_t = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure(
            logits: torch.Tensor = logits,
            log_t: torch.Tensor = log_t,
            opt: torch.optim.Optimizer = opt,
        ) -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), outputs.labels)
            loss.backward()
            return loss

        opt.step(closure)
        temps.append(float(log_t.detach().exp().clamp(1e-2, 1e2)))
    return np.asarray(temps)


def exit_statistics(
    outputs: ExitOutputs, thresholds: Sequence[float], temperatures: Sequence[float] | None = None
) -> ExitStatistics:
    """Accuracy, exit rates and the per-sample record of every exit.

    Args:
        outputs: logits and labels of every exit.
        thresholds: entropy thresholds T in [0, 1].
        temperatures: per-exit temperatures (default 1).

    Returns:
        The statistics; ``exit_rate[t, i] = mean(entropy[i] < thresholds[t])``.
    """
    n = len(outputs.logits)
    temps = np.ones(n) if temperatures is None else np.asarray(temperatures, dtype=np.float64)
    if temps.shape != (n,):
        raise ValueError(f"expected {n} temperatures, got {temps.shape}")
    entropy = np.stack(
        [
            normalized_entropy(lg, float(t)).numpy()
            for lg, t in zip(outputs.logits, temps, strict=True)
        ]
    ).astype(np.float64)
    correct = np.stack([(lg.argmax(-1) == outputs.labels).numpy() for lg in outputs.logits])
    th = np.asarray(thresholds, dtype=np.float64)
    exit_rate = (entropy[None, :, :] < th[:, None, None]).mean(axis=2)
    return ExitStatistics(correct.mean(axis=1), exit_rate, entropy, correct, temps)
