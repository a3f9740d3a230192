"""Lightning callbacks of earlyexit training.

- :class:`SaveEarlyExitCheckpoint` writes the trained model as an earlyexit checkpoint.
- :class:`PlanOnFitEnd` profiles the exits and plans at the end of ``fit``.

``PlanOnFitEnd``:
At the end of training (on rank zero only) it runs the LightningModule's
``.model`` (an :class:`~earlyexit.MultiExitModel` with an exit after every
block) over the validation data (a fresh ``val_dataloader()`` of the datamodule,
so that under DDP rank zero sees all of it; else the trainer's, else the
module's), computes the accuracy and exit rates of every exit and the
per-sample record (:func:`~earlyexit.profiling.exits.
collect_exit_outputs`, :func:`~earlyexit.profiling.exits.exit_statistics`),
puts them into a copy of a device profile (its devices, timings and bit sizes
are kept; its accuracy, exit rates and samples are replaced), plans for the
topology with :func:`earlyexit.plan` and writes ``plan.json`` and the updated
profile beside it (``plan.profile.json``), both atomically.

Example:
    ```python
    import lightning as L
    from earlyexit.training.callbacks import PlanOnFitEnd
    cb = PlanOnFitEnd("portend-aws", "profile.json", min_accuracy=0.8)
    L.Trainer(max_epochs=10, callbacks=[cb]).fit(module, datamodule=dm)
    cb.plan.partitions
    ```
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from numbers import Real
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from typing_extensions import override

from earlyexit.formats import Plan, Profile, ProfileSamples, Topology
from earlyexit.planner.api import plan as make_plan
from earlyexit.planner.estimators import ESTIMATORS
from earlyexit.planner.latency import CostModel
from earlyexit.planner.space import HINTS, make_space
from earlyexit.planner.topology import resolve_profile, resolve_topology
from earlyexit.profiling.exits import ExitOutputs, collect_exit_outputs, exit_statistics
from earlyexit.surgery.digest import model_digest
from earlyexit.surgery.multi_exit import MultiExitModel

__all__ = ["SaveEarlyExitCheckpoint", "PlanOnFitEnd"]



class SaveEarlyExitCheckpoint(L.Callback):
    """At the end of ``fit``, write the model as an earlyexit checkpoint (rank zero only).

    The file is what :func:`earlyexit.load` reads: the model config, the data's
    normalization, class names and input shape, the weights, and a ``training``
    record (epochs, steps, the last validation accuracy of every exit).

    Args:
        path: the file to write, e.g. ``checkpoints/resnet20_fashionmnist.pt``.

    Raises:
        TypeError: if ``path`` is not a string or path.
        ValueError: if ``path`` is empty or an existing directory.
    """

    def __init__(self, path: str | Path) -> None:
        if not isinstance(path, (str, Path)):
            raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
        if not str(path).strip():
            raise ValueError("path must not be empty")
        if Path(path).is_dir():
            raise ValueError(f"path {path} is a directory; give a file name such as model.pt")
        self.path = Path(path)
        self.written: Path | None = None

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics: dict[str, Any] = {
            k: round(float(v), 6)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/")
        }
        record = {
            "epochs": int(trainer.current_epoch),
            "global_step": int(trainer.global_step),
            "world_size": int(trainer.world_size),
            "val_metrics": metrics,
        }
        self.written = pl_module.save_model(self.path, training=record)  # type: ignore[operator]
        rank_zero_info(f"earlyexit: wrote {self.written}")



def _number(value: Any, name: str, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
        bracket = "(" if lo_open else "["
        raise ValueError(f"{name}: expected a number in {bracket}{lo:g}, {hi:g}], got {value!r}")
    return v


class PlanOnFitEnd(L.Callback):
    """At the end of ``fit``, profile the exits on the validation data, plan, write ``plan.json``.

    Args:
        topology: a :class:`~earlyexit.formats.Topology`, a built-in name
            (``portend-aws``, ``mobile``, ``iot``) or a topology YAML path. Its
            tiers name devices of ``device_profile``.
        device_profile: a :class:`~earlyexit.formats.Profile` or a profile JSON
            path whose devices supply the timings (partition, serialization) and
            bit sizes; its accuracy, exit rates and samples are replaced by those
            measured at the end of fit.
        output: the plan file to write; the updated profile goes beside it as
            ``<stem>.profile.json``.
        min_accuracy: P_lat, minimum latency with accuracy at least this (in [0, 1]).
        max_latency: P_acc, maximum accuracy with latency at most this (seconds, > 0).
            With neither bound the plan minimizes latency.
        estimator: ``"portend"`` or ``"exact"``.
        thresholds: the entropy thresholds at which exit rates are measured (and
            searched), numbers in [0, 1]; default: those of ``device_profile``.
        **hints: search hints of :func:`earlyexit.plan` (``num_partitions``,
            ``max_partitions``, ``tiers``, ``placement``, ``cut_points``, ``exits``).

    Attributes (after fit):
        plan: the :class:`~earlyexit.formats.Plan`, or ``None`` if no configuration
            meets the bound (a warning says the best reachable value).
        profile: the updated :class:`~earlyexit.formats.Profile`.
        written: the paths written, ``[plan, profile]`` (the profile only if no plan).

    Raises:
        TypeError: an argument of the wrong type, or an unknown hint.
        ValueError: a bad value (the message names the valid choices), a topology
            whose devices are not in the profile, or hints that leave nothing to search.
        FileNotFoundError: ``device_profile`` or the topology file does not exist.
    """

    def __init__(
        self,
        topology: Topology | str | os.PathLike[str] | Mapping[str, Any],
        device_profile: Profile | str | os.PathLike[str],
        output: str | os.PathLike[str] = "plan.json",
        min_accuracy: float | None = None,
        max_latency: float | None = None,
        estimator: str = "portend",
        thresholds: Sequence[float] | None = None,
        **hints: Any,
    ) -> None:
        super().__init__()
        self.topology = resolve_topology(topology)
        if not isinstance(device_profile, (Profile, str, os.PathLike)):
            raise TypeError(
                f"device_profile: expected a Profile or a profile JSON path, got {type(device_profile).__name__}"
            )
        if isinstance(device_profile, str) and device_profile.lstrip().startswith("{"):
            # LightningCLI (jsonargparse) hands over a JSON file's content, not its path
            device_profile = Profile.from_dict(json.loads(device_profile))
        self.device_profile = resolve_profile(device_profile)
        if not isinstance(output, (str, os.PathLike)) or not os.fspath(output).strip():
            raise TypeError(f"output: expected a file path such as 'plan.json', got {output!r}")
        self.output = Path(output)
        if self.output.is_dir():
            raise ValueError(
                f"output: {self.output} is a directory; give a file name such as plan.json"
            )
        if min_accuracy is not None and max_latency is not None:
            raise ValueError("give min_accuracy (P_lat) or max_latency (P_acc), not both")
        self.min_accuracy = (
            None if min_accuracy is None else _number(min_accuracy, "min_accuracy", 0.0, 1.0)
        )
        self.max_latency = (
            None
            if max_latency is None
            else _number(max_latency, "max_latency", 0.0, math.inf, lo_open=True)
        )
        if not isinstance(estimator, str) or estimator not in ESTIMATORS:
            raise ValueError(f"estimator: expected one of {list(ESTIMATORS)}, got {estimator!r}")
        self.estimator = estimator
        if thresholds is None:
            th = self.device_profile.thresholds.copy()
        else:
            if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Iterable):
                raise TypeError(
                    f"thresholds: expected a list of numbers in [0, 1], got {thresholds!r}"
                )
            th = np.array([_number(t, "thresholds", 0.0, 1.0) for t in thresholds])
            if th.size == 0:
                raise ValueError("thresholds: expected at least one threshold in [0, 1]")
        self.thresholds = np.unique(th)
        unknown = sorted(set(hints) - set(HINTS))
        if unknown:
            valid = [h for h in HINTS if h != "thresholds"]
            raise TypeError(
                f"unknown hint(s) {unknown}; valid hints: {', '.join(valid)} "
                "(the thresholds are the `thresholds` argument)"
            )
        if "thresholds" in hints:
            raise TypeError("thresholds: pass them as the `thresholds` argument, not as a hint")
        self.hints = dict(hints)
        # the devices, the block count and the hints are checked now, not after training
        make_space(CostModel(self.device_profile, self.topology), **self.hints)
        self.plan: Plan | None = None
        self.profile: Profile | None = None
        self.written: list[Path] = []

    @property
    def profile_path(self) -> Path:
        """Where the updated profile is written: ``<output stem>.profile.json`` beside the plan."""
        return self.output.with_name(f"{self.output.stem}.profile.json")

    def _model(self, pl_module: L.LightningModule) -> MultiExitModel:
        model = getattr(pl_module, "model", None)
        if not isinstance(model, MultiExitModel):
            raise TypeError(
                f"PlanOnFitEnd needs a LightningModule whose .model is an earlyexit.MultiExitModel, "
                f"got {type(model).__name__}"
            )
        n = model.num_blocks
        if tuple(model.exits) != tuple(range(1, n + 1)):
            raise ValueError(
                f"PlanOnFitEnd profiles the full configuration (an exit after every block); "
                f"the model's exits are {list(model.exits)}"
            )
        if n != self.device_profile.num_blocks:
            raise ValueError(
                f"the model has {n} blocks but device_profile has {self.device_profile.num_blocks}"
            )
        if model.num_classes != self.device_profile.num_classes:
            raise ValueError(
                f"the model has {model.num_classes} classes but device_profile has "
                f"{self.device_profile.num_classes}"
            )
        return model

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._model(pl_module)  # fail before training, not after

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        model = self._model(pl_module)
        # a fresh loader of the datamodule first: under DDP the trainer's own loaders are
        # sharded (rank zero would see only its share of the validation data)
        loaders: Any = None
        if trainer.datamodule is not None and is_overridden("val_dataloader", trainer.datamodule):
            loaders = trainer.datamodule.val_dataloader()
        if loaders is None:
            loaders = trainer.val_dataloaders
        if loaders is None and is_overridden("val_dataloader", pl_module):
            loaders = pl_module.val_dataloader()
        if loaders is None:
            raise ValueError(
                "PlanOnFitEnd needs validation data (a val_dataloader) to profile the exits"
            )
        if not isinstance(loaders, (list, tuple)):
            loaders = [loaders]
        device = next(model.parameters()).device

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for loader in loaders:
                for batch in loader:
                    x, y = batch[0], batch[1]
                    yield x.to(device), torch.as_tensor(y).cpu()

        out = collect_exit_outputs(model, batches())
        out = ExitOutputs([lg.cpu() for lg in out.logits], out.labels.cpu())
        temps = model.temperatures.detach().cpu().double().numpy()
        stats = exit_statistics(out, self.thresholds, temps)
        dm = trainer.datamodule
        name = getattr(dm, "name", None) if dm is not None else None
        extra = dict(self.device_profile.extra)
        extra.update(
            model_digest=model_digest(model),
            profiling_samples=int(stats.entropy.shape[1]),
            profiled_by={
                "callback": "PlanOnFitEnd",
                "epoch": int(trainer.current_epoch),
                "global_step": int(trainer.global_step),
            },
        )
        self.profile = replace(
            self.device_profile,
            dataset=name if isinstance(name, str) else self.device_profile.dataset,
            thresholds=self.thresholds.copy(),
            branch_accuracy=stats.branch_accuracy,
            exit_rate=stats.exit_rate,
            temperatures=stats.temperatures,
            samples=ProfileSamples(stats.entropy, stats.correct),
            extra=extra,
        )  # validated again (Profile.__post_init__)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.profile.save(self.profile_path)
        self.written = [self.profile_path]
        try:
            self.plan = make_plan(
                self.profile,
                self.topology,
                min_accuracy=self.min_accuracy,
                max_latency=self.max_latency,
                estimator=self.estimator,
                **self.hints,
            )
        except ValueError as err:
            self.plan = None
            rank_zero_warn(f"earlyexit: no plan written to {self.output}: {err}")
            return
        self.plan.save(self.output)
        self.written = [self.output, self.profile_path]
        rank_zero_info(f"earlyexit: wrote {self.output} and {self.profile_path}")
