"""DDP: two CPU processes (ddp_spawn, gloo) train, synchronize metrics, write one checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

import earlyexit
from earlyexit import MultiExitModel, backbones, decompose
from earlyexit.data import EarlyExitDataModule
from earlyexit.training.callbacks import SaveEarlyExitCheckpoint
from earlyexit.training.module import MultiExitModule


class RecordRank(L.Callback):
    """Each process writes its rank, world size and process-group backend to a file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import os

        backend = torch.distributed.get_backend()
        line = f"{trainer.global_rank} {trainer.world_size} {backend} {os.getpid()}"
        (self.folder / f"rank{trainer.global_rank}.txt").write_text(line)


@pytest.mark.slow
def test_ddp_spawn_two_processes_gloo(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = backbones.create("resnet20", num_classes=10, in_chans=1)
    model = MultiExitModel(decompose(net, input_shape=(1, 28, 28)), num_classes=10, exits=[3, 10])
    module = MultiExitModule(model, schedule="constant")
    dm = EarlyExitDataModule("fashion-mnist", batch_size=16, augment=False)
    out = tmp_path / "ddp.pt"
    trainer = L.Trainer(
        strategy="ddp_spawn",
        accelerator="cpu",
        devices=2,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[SaveEarlyExitCheckpoint(out), RecordRank(tmp_path)],
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.world_size == 2
    records = sorted(p.read_text().split() for p in tmp_path.glob("rank*.txt"))
    assert [r[:3] for r in records] == [["0", "2", "gloo"], ["1", "2", "gloo"]]
    assert records[0][3] != records[1][3]  # two processes

    # rank zero wrote exactly one checkpoint, with the trained weights
    assert out.is_file() and not list(tmp_path.glob(".ddp.pt.*"))
    loaded = earlyexit.load(out)
    assert loaded.metadata["training"]["world_size"] == 2
    module.model.eval()
    x = torch.randn(4, 1, 28, 28)
    for a, b in zip(module.model(x), loaded(x), strict=True):
        assert torch.allclose(a, b, atol=1e-6)

    # the validation accuracy was synchronized: it covers both ranks' shards. The
    # DistributedSampler gives rank r the samples r, r+2, ...; 2 batches of 16 per
    # rank are therefore exactly the first 64 samples of the profiling split.
    dm.setup()
    prof = dm.dataset("profile")
    xs = torch.stack([prof[i][0] for i in range(64)])
    ys = torch.stack([prof[i][1] for i in range(64)])
    with torch.no_grad():
        outs = loaded(xs)
    for block, logits in zip((3, 10), outs, strict=True):
        expected = float((logits.argmax(1) == ys).float().mean())
        assert float(trainer.callback_metrics[f"val/acc_exit_{block}"]) == pytest.approx(
            expected, abs=1e-6
        )
