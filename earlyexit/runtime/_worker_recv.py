"""A tier worker's receiving side: wire messages parsed, checked and admitted.

Mixed into :class:`~earlyexit.runtime.worker.Worker`, whose ``__init__`` sets the
state used here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import zmq

from earlyexit.runtime._worker_control import _MAX_UPSTREAMS
from earlyexit.runtime.wire import WireError, decode, decode_batch

__all__: list[str] = []

log = logging.getLogger("earlyexit.runtime.worker")

_ENDPOINTS = ("tcp://", "ipc://")


class _Receive:
    """Parse a received frame into ``(array, ids, ack address)``, or reject it."""

    def _reject(self, reason: str) -> None:
        self.stats["rejected"] += 1
        log.warning("partition %d: rejected a message: %s", self.partition, reason)

    def _parse_frame(self, frame: zmq.Frame) -> tuple[np.ndarray, list[int], str | None] | None:
        """One received frame: a compact batch read the short way, anything else by ``_parse``."""
        fast = decode_batch(frame.buffer, self.max_message_bytes)
        if fast is not None and (fast[3] is None or fast[3].startswith(_ENDPOINTS)):
            return fast[0], fast[2], fast[3]
        return self._parse([frame])

    def _admit(
        self, item: tuple[np.ndarray, list[int], str | None]
    ) -> tuple[np.ndarray, list[int], str | None]:
        """Note when a message's samples arrived and its upstream (to ack and beat)."""
        t_in = self._last_input = time.monotonic()
        ack = item[2]
        if ack is not None:
            recv_at = self._recv_at
            for i in item[1]:
                recv_at[i] = t_in
            if ack not in self._upstreams:
                if len(self._upstreams) >= _MAX_UPSTREAMS:
                    self._reject(f"too many upstreams; ignoring acks to {ack}")
                    return item[0], item[1], None
                self._upstreams.add(ack)
        return item

    def _parse(self, frames: list[Any]) -> tuple[np.ndarray, list[int], str | None] | None:
        if len(frames) != 1:
            self._reject(f"{len(frames)} frames; a wire message is one frame")
            return None
        frame = frames[0]
        try:
            arr, head = decode(
                frame.buffer if isinstance(frame, zmq.Frame) else frame,
                max_bytes=self.max_message_bytes,
            )
        except WireError as err:
            self._reject(str(err))
            return None
        ids = head.get("ids")
        if head.get("kind") == "probe":
            self._on_probe(ids, head.get("ack"))
            return None
        if head.get("kind") not in ("input", "features"):
            self._reject(f"kind {head.get('kind')!r} is not 'input' or 'features'")
            return None
        if arr.ndim < 1 or arr.dtype.kind not in "fiu":
            self._reject(f"array of dtype {arr.dtype} and shape {arr.shape} is not a batch")
            return None
        if (
            not isinstance(ids, list)
            or len(ids) != arr.shape[0]
            or not all(type(i) is int for i in ids)  # bool is not int here
        ):
            self._reject(f"ids must be a list of {arr.shape[0]} integers, got {str(ids)[:80]}")
            return None
        ack = head.get("ack")
        if ack is not None and (
            not isinstance(ack, str) or not ack.startswith(("tcp://", "ipc://"))
        ):
            self._reject(f"ack address {str(ack)[:80]!r} is not a ZeroMQ endpoint")
            return None
        return arr, ids, ack

    def _take(self, frame: zmq.Frame) -> tuple[np.ndarray, list[int], str | None] | None:
        """A received message, parsed and admitted (None if rejected, or a probe)."""
        self.stats["received"] += 1
        c0 = self._cpu()
        if frame.more:  # a wire message is one frame: _parse rejects the rest
            item = self._parse([frame, *self._in.recv_multipart(copy=False)])
        else:
            item = self._parse_frame(frame)
        self._emulate(c0)
        return None if item is None else self._admit(item)
