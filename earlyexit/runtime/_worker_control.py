"""A tier worker's control plane: acks, heartbeats, probes, and the next worker's health.

Mixed into :class:`~earlyexit.runtime.worker.Worker`, whose ``__init__`` sets the
state used here (see the module docstring of :mod:`earlyexit.runtime.worker`:
faults and link measurement).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from earlyexit.runtime._sockets import readable
from earlyexit.runtime.monitor import merge_link_report, transfer_times
from earlyexit.runtime.policies import merge_policy_reports
from earlyexit.runtime.wire import WireError, decode, encode

__all__: list[str] = []

log = logging.getLogger("earlyexit.runtime.worker")

_EMPTY = np.empty(0, np.uint8)

_MAX_UPSTREAMS = 16


class _ControlPlane:
    """Acks and heartbeats to the upstreams, acks and heartbeats from the next worker."""

    def _on_probe(self, ids: Any, ack: Any) -> None:
        """A probe from upstream: acknowledge it (with its ``held`` time), run nothing."""
        if not isinstance(ack, str) or not ack.startswith(("tcp://", "ipc://")):
            self._reject(f"a probe without a ZeroMQ ack address: {str(ack)[:80]!r}")
            return
        if not isinstance(ids, list) or not all(type(i) is int for i in ids):
            self._reject(f"a probe's ids must be a list of integers, got {str(ids)[:80]}")
            return
        now = time.monotonic()
        for i in ids:
            self._recv_at[i] = now
        self._ack_later(ack, ids)
        # the prober is an upstream: it hears our heartbeats, so that it does not
        # take a link that only carried probes for a dead next worker
        if ack not in self._upstreams and len(self._upstreams) < _MAX_UPSTREAMS:
            self._upstreams.add(ack)

    def _observe_acks(self, ids: list[Any], held: Any, now: float) -> None:
        """Feed the link estimator from an ack: send to ack, minus the time the receiver held it."""
        for (_, nbytes), dt in transfer_times(self._sent, ids, held, now):
            self.link_estimator.observe(nbytes, dt, now)

    def _probe(self, now: float) -> None:
        """Send a probe of the size the link estimator asks for, if it asks (docs/adaptive.md)."""
        if self.next_route is None or self.downstream_dead:
            return
        if now - self._last_input > self.link_estimator.max_age_s:
            return  # no samples here lately (another plan is in use): leave the link alone
        size = self.link_estimator.probe_size(now)
        if size is None:
            return
        pid = -(2**62) - next(self._probe_ids)  # never a client's id
        msg = encode(np.zeros(size, np.uint8), kind="probe", ids=[pid], ack=self.control_address)
        if self._data.send(self.next_route, msg):
            self._sent[pid] = (time.monotonic(), len(msg))

    def _link_report(self) -> list[list[float]]:
        """``[tier, next_tier, bandwidth_mbps, propagation_ms, at]`` of every link known here."""
        if self.tier is not None and self.options.next_tier is not None:
            est = self.link_estimator.estimate()
            if est is not None:
                self.link_reports[(self.tier, self.options.next_tier)] = [
                    est.bandwidth_mbps,
                    est.propagation_ms,
                    est.at,
                ]
        return [[a, b, *v] for (a, b), v in self.link_reports.items()]

    def _send_control(self, addr: str, kind: str, **meta: Any) -> None:
        try:
            self._control.send([addr], encode(_EMPTY, kind=kind, partition=self.partition, **meta))
        except ValueError as err:
            log.warning("partition %d: cannot send %s to %s: %s", self.partition, kind, addr, err)

    def _on_control(self) -> None:
        while readable(self._ctl):
            frames = self._ctl.recv_multipart()
            if not frames:
                continue
            try:
                _, head = decode(frames[-1], max_bytes=1 << 20)
            except WireError as err:
                self._reject(f"control: {err}")
                continue
            if head.get("kind") == "feedback":  # from the destination (AdaEE), not downstream
                self._on_feedback(head)
                continue
            if head.get("partition") != self.partition + 1:
                continue
            self._down_heard = time.monotonic()
            if self.downstream_dead:
                log.info("partition %d: the next partition answers again", self.partition)
                self.downstream_dead = False
            if head.get("kind") == "ack" and isinstance(head.get("ids"), list):
                for i in head["ids"]:
                    if type(i) is int:  # anything else (a list, a dict) is no sample id
                        self._pending.pop(i, None)
                self._observe_acks(head["ids"], head.get("held"), self._down_heard)
            if "links" in head:
                merge_link_report(self.link_reports, head["links"])
            if "policies" in head:
                merge_policy_reports(self.policy_reports, head["policies"])

    def _flush_pending(self, reason: str) -> None:
        if not self._pending:
            return
        log.warning(
            "partition %d: %s; %d in-flight sample(s) finish at this exit, degraded",
            self.partition,
            reason,
            len(self._pending),
        )
        ids = list(self._pending)
        rows = [self._pending.pop(i) for i in ids]
        self._drop_awaiting(ids)
        self._send_results(
            ids, np.stack([r[0] for r in rows]), np.array([r[1] for r in rows]), degraded=True
        )

    def _check_downstream(self) -> None:
        if self.is_last or self._down_heard is None or self.downstream_dead:
            return
        if time.monotonic() - self._down_heard > self.dead_after_s:
            self.downstream_dead = True
            self._flush_pending(f"the next partition is silent for over {self.dead_after_s:g} s")

    def _flush_acks(self) -> None:
        """Send the gathered acks, one message per upstream."""
        acks, self._acks = self._acks, {}
        now = time.monotonic()
        recv = self._recv_at
        for addr, gids in acks.items():
            # how long each sample was here: the sender subtracts it from its round trip
            held = [round(now - recv.pop(i, now), 6) for i in gids]
            self._send_control(addr, "ack", ids=gids, held=held)
        self._next_ack = time.monotonic() + self.ack_interval_s

    def _ack_later(self, addr: str, ids: list[int]) -> None:
        """Gather acks of ``ids`` for ``addr``, sent when ``ack_interval_s`` has passed."""
        self._acks.setdefault(addr, []).extend(ids)
        if self._next_ack < self._next_tick:
            self._next_tick = self._next_ack

    def _tick(self, now: float) -> None:
        """What is due now (acks, heartbeats, probes, the next worker's silence), and when next.

        Control messages are read here first: the next worker's silence is judged
        on what it sent.
        """
        self._on_control()
        self._keep_upstream_informed(now)
        self._check_downstream()
        due = self._next_beat
        if self._acks and self._next_ack < due:
            due = self._next_ack
        if not self.is_last and self._down_heard is not None and not self.downstream_dead:
            # just past the moment the silence becomes too long (the check is strict)
            due = min(due, self._down_heard + self.dead_after_s + 1e-3)
        self._next_tick = due

    def _keep_upstream_informed(self, now: float) -> None:
        """Send the gathered acks and, when due, heartbeats (with link reports) and probes."""
        if self._acks and now >= self._next_ack:
            self._flush_acks()
        if now >= self._next_beat:
            links = self._link_report()
            self.policy_reports[self.partition] = self._policy_report()
            # this worker's policy and those reported from downstream (docs/spec.md)
            policies = {str(k): v for k, v in self.policy_reports.items()}
            for addr in self._upstreams:
                if links:
                    self._send_control(addr, "heartbeat", links=links, policies=policies)
                else:
                    self._send_control(addr, "heartbeat", policies=policies)
            if self.options.next_tier is not None:
                self._probe(now)
            self._next_beat = now + self.heartbeat_s
