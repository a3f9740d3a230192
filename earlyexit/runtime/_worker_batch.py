"""A tier worker's micro-batches: consecutive messages run as one batch.

Mixed into :class:`~earlyexit.runtime.worker.Worker`, whose ``__init__`` sets the
state used here.
"""

from __future__ import annotations

import numpy as np

__all__: list[str] = []


class _MicroBatch:
    """Group messages of one shape, run each group once; a failing group runs message by message."""

    def _run_batch(self, batch: list[tuple[np.ndarray, list[int], str | None]]) -> None:
        if len(batch) == 1:  # no grouping at batch 1
            groups = [batch]
        else:  # consecutive messages of one shape and dtype run together
            groups = [batch[:1]]
            for item in batch[1:]:
                head = groups[-1][0][0]
                if head.shape[1:] == item[0].shape[1:] and head.dtype == item[0].dtype:
                    groups[-1].append(item)
                else:
                    groups.append([item])
        for group in groups:
            self._run_group(group)
            for _, gids, ack in group:
                if ack is not None:
                    self._ack_later(ack, gids)
        if self.ack_interval_s <= 0.0:
            self._flush_acks()

    def _run_group(self, group: list[tuple[np.ndarray, list[int], str | None]]) -> None:
        """Run messages as one batch; if the partition raises, each alone, failing only those."""
        c0 = self._cpu()
        # a view of the received frame (read-only, no copy) or one concatenation
        x = group[0][0] if len(group) == 1 else np.concatenate([g[0] for g in group])
        self._emulate(c0)
        ids = group[0][1] if len(group) == 1 else [i for g in group for i in g[1]]
        try:
            step = self._compute(x)
        except Exception as err:  # a bad tensor or a broken partition must not stop the worker
            if len(group) == 1:
                self._fail(ids, err)
            else:
                for item in group:
                    self._run_group([item])
            return
        self._route(ids, step)
