"""The client: submits inputs at the source tier and collects results at the destination.

The client is the source application and the destination consumer of
``docs/spec.md``: it serializes each input and sends it (over the emulated links
if the first partition is on another tier), and it deserializes the results
that workers send to its results address. Per sample it measures the
end-to-end latency, from the input being available (before serialization) to
the result being available (after deserialization). The source and destination
tiers' ``slowdown`` is emulated on that serialization and deserialization as the
workers emulate theirs (a sleep of ``slowdown - 1`` times the CPU time spent).

Results are delivered exactly once per submitted id: a late duplicate (possible
only around a fault) is counted in ``stats["duplicates"]`` and dropped. The
client is the upstream of the first partition: if that worker dies, the
inputs it had not acknowledged come back as degraded results with no exit
(``partition == -1``, ``logits is None``).

Example:
    ```python
    from earlyexit.runtime.deployment import deploy
    with deploy(synthetic={"num_partitions": 2}, threshold=0.5) as d:
        r = d.client.infer(d.inputs(1)[0])
    r.prediction in range(10)  # True
    ```
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

import numpy as np
import zmq

from earlyexit.runtime._cpuclock import emulation_cpu
from earlyexit.runtime._input_link import InputLink
from earlyexit.runtime._requests import Ledger, Result
from earlyexit.runtime._routing import RouteSender
from earlyexit.runtime._sockets import readable
from earlyexit.runtime.monitor import merge_link_report
from earlyexit.runtime.policies import confidence, merge_policy_reports
from earlyexit.runtime.wire import (
    MAX_FEEDBACK,
    MAX_MESSAGE_BYTES,
    WireError,
    decode,
    encode,
    encode_batch,
    encode_feedback,
)

__all__ = ["Client", "Result"]

log = logging.getLogger("earlyexit.runtime.client")


def _emulate(slowdown: float, cpu_t0: float) -> float:
    """Sleep ``(slowdown - 1)`` times the CPU time this thread spent since ``cpu_t0``; return that CPU time."""
    if not slowdown > 1.0:
        return 0.0
    spent = max(0.0, emulation_cpu() - cpu_t0)
    time.sleep((slowdown - 1.0) * spent)
    return spent


def _cpu(slowdown: float) -> float:
    """The thread's CPU time, read only when a slowdown is emulated (else 0)."""
    return emulation_cpu() if slowdown > 1.0 else 0.0


class Client:
    """Submit inputs and collect results.

    Args:
        input_route: addresses from the source tier to the first partition's
            worker (emulated links first, the worker's input address last).
        results_bind: where results arrive (``tcp://host:port``; ``*`` picks a port).
        control_bind: where the first worker sends acks and heartbeats.
        hwm: ZeroMQ high-water mark (messages): submit blocks when it is reached.
        send_timeout_s: longest a submit may block before raising TimeoutError.
        dead_after_s: silence after which the first worker is considered dead.
        max_message_bytes: larger result messages are rejected.
        context: ZeroMQ context (default: a new one).
        source_slowdown: slowdown of the source tier, emulated on serializing inputs.
        destination_slowdown: slowdown of the destination tier, emulated on
            deserializing results.
        feedback_address: the first worker's control address when it runs
            AdaEE (``deploy`` sets it): for every result of a sample that went on
            past the first exit the client sends it a ``feedback`` message with
            the final exit's confidence (None: no feedback).

    Attributes:
        cpu_s: the thread CPU time the slowdown emulation stretched, in total:
            ``"encode"`` serializing inputs, ``"decode"`` receiving, checking and
            deserializing results (0 where that end's slowdown is 1). The
            profile's ``client_curve`` is read from it (docs/spec.md#the-client).

    Example:
        >>> c = Client(["tcp://127.0.0.1:9"])
        >>> c.results_address.startswith("tcp://127.0.0.1:")
        True
        >>> c.close()
    """

    def __init__(
        self,
        input_route: Sequence[str] = (),
        *,
        results_bind: str = "tcp://127.0.0.1:*",
        control_bind: str = "tcp://127.0.0.1:*",
        hwm: int = 64,
        send_timeout_s: float = 10.0,
        dead_after_s: float = 2.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        context: zmq.Context | None = None,
        source_slowdown: float = 1.0,
        destination_slowdown: float = 1.0,
        feedback_address: str | None = None,
    ) -> None:
        if not source_slowdown > 0 or not destination_slowdown > 0:
            raise ValueError(
                f"slowdowns must be > 0, got {source_slowdown} and {destination_slowdown}"
            )
        self.source_slowdown = float(source_slowdown)
        self.destination_slowdown = float(destination_slowdown)
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._results = self._ctx.socket(zmq.PULL)
        self._results.setsockopt(zmq.RCVHWM, max(hwm, 1000))
        self._results.setsockopt(zmq.LINGER, 0)
        self._results.bind(results_bind)
        # one poller for the client's life: Socket.poll builds and registers a new one per call
        self._poller = zmq.Poller()
        self._poller.register(self._results, zmq.POLLIN)
        self._ctl = self._ctx.socket(zmq.PULL)
        self._ctl.setsockopt(zmq.LINGER, 0)
        self._ctl.bind(control_bind)
        self.results_address: str = self._results.getsockopt_string(zmq.LAST_ENDPOINT)
        self.control_address: str = self._ctl.getsockopt_string(zmq.LAST_ENDPOINT)
        self.send_timeout_s = float(send_timeout_s)
        self.dead_after_s = float(dead_after_s)
        self.max_message_bytes = int(max_message_bytes)
        self._sender = RouteSender(self._ctx, hwm=hwm, send_timeout_s=0.05)
        self.input_route = list(input_route)
        self._book = Ledger()
        self.stats = self._book.stats
        self.cpu_s = {"encode": 0.0, "decode": 0.0}
        # link measurement (docs/adaptive.md): the client is the sender of the inputs;
        # route_tiers says which tiers the input route joins (set with the route)
        self.route_tiers: tuple[int, int] | None = None
        self._link = InputLink()
        self.link_estimators = self._link.estimators
        # newest estimate per (tier, next tier): [bandwidth_mbps, propagation_ms, at]
        self.link_reports = self._link.reports
        # the workers' exit policies as their heartbeats report them: partition -> describe()
        self.policies: dict[int, dict] = {}
        self._feedback = RouteSender(self._ctx, hwm=100_000, send_timeout_s=0.01)
        self.feedback_address = feedback_address
        self.feedback_sent = 0  # samples answered with feedback

    @property
    def input_route(self) -> list[str]:
        """The route to the first partition's worker (set it to connect ahead of the first input)."""
        return self._input_route

    @input_route.setter
    def input_route(self, route: Sequence[str]) -> None:
        self._input_route = list(route)
        if self._input_route:
            self._sender.connect(self._input_route[0])

    @property
    def feedback_address(self) -> str | None:
        """The first worker's control address when it runs AdaEE (set it to connect ahead)."""
        return self._feedback_address

    @feedback_address.setter
    def feedback_address(self, address: str | None) -> None:
        self._feedback_address = address
        if address is not None:
            self._feedback.connect(address)

    # ----------------------------------------------------------------- submit
    def submit(
        self, x: np.ndarray, ids: Sequence[int] | None = None, *, batch: bool = False
    ) -> list[int]:
        """Send inputs to the first partition.

        Args:
            x: a batch ``[n, ...]`` of inputs (numpy).
            ids: one integer id per sample (default: fresh ones).
            batch: send the n samples in one message; by default one message each.

        Returns:
            The ids of the submitted samples.

        Raises:
            ValueError: ids of the wrong length or already in flight, no route.
            TimeoutError: the first worker accepts nothing for ``send_timeout_s``.
        """
        if not self.input_route:
            raise ValueError("the client has no input_route: set it to the first worker's route")
        x = np.asarray(x)
        if x.ndim < 1:
            raise ValueError(f"x must be a batch [n, ...], got shape {x.shape}")
        book = self._book
        ids = book.new_ids(len(x), ids)
        groups = [(0, len(x))] if batch else [(j, j + 1) for j in range(len(x))]
        for a, b in groups:  # slices: views, the message is the one copy
            gids = ids[a:b]
            t0 = time.perf_counter()
            for i in gids:
                book.t0[i] = t0
            c0 = _cpu(self.source_slowdown)
            msg = encode_batch(x[a:b], "input", gids, self.control_address)
            self.cpu_s["encode"] += _emulate(self.source_slowdown, c0)
            deadline = time.monotonic() + self.send_timeout_s
            while not self._sender.send(self.input_route, msg):
                self._drain(0)
                if time.monotonic() > deadline:
                    for i in gids:
                        book.t0.pop(i, None)
                    raise TimeoutError(
                        f"the first worker accepted no input for {self.send_timeout_s:g} s"
                    )
            book.sent(gids)
            self._link.sent(self.route_tiers, gids[0], len(msg))
        return ids

    # ----------------------------------------------------------------- receive
    def _on_result(self, frames: list[zmq.Frame]) -> None:
        c0 = _cpu(self.destination_slowdown)
        try:
            if len(frames) != 1:
                raise WireError(f"{len(frames)} frames; a wire message is one frame")
            arr, head = decode(frames[0].buffer, max_bytes=self.max_message_bytes)
            ids, ent = head.get("ids"), head.get("entropy")
            failed = head.get("failed") is True
            if (
                head.get("kind") != "result"
                or not isinstance(ids, list)
                or arr.ndim != 2
                or len(ids) != arr.shape[0]
                or not isinstance(ent, list)
                or len(ent) != (0 if failed else len(ids))
            ):
                raise WireError("not a result message (kind 'result', ids, entropy, 2-D logits)")
        except WireError as err:
            self.stats["rejected"] += 1
            log.warning("client: rejected a result message: %s", err)
            return
        logits = np.array(arr, np.float32)
        self.cpu_s["decode"] += _emulate(self.destination_slowdown, c0)
        t1 = time.perf_counter()  # the result is available: deserialized
        self._book.answer(head, ids, logits, ent, t1)
        if self.feedback_address is not None and not failed:
            part = head.get("partition")
            if type(part) is int and part > 0:  # went on past the first exit
                self._send_feedback(ids, logits)

    def _send_feedback(self, ids: list, logits: np.ndarray) -> None:
        """Tell the first worker (AdaEE) each sample's final-exit confidence (never blocks)."""
        keep = [j for j, i in enumerate(ids) if type(i) is int]
        if not keep or self.feedback_address is None:
            return
        conf = confidence(logits[keep]).round(6).tolist()
        for a in range(0, len(keep), MAX_FEEDBACK):
            msg = encode_feedback([ids[j] for j in keep[a : a + MAX_FEEDBACK]],
                                  conf[a : a + MAX_FEEDBACK])  # fmt: skip
            try:
                if self._feedback.send([self.feedback_address], msg):
                    self.feedback_sent += len(keep[a : a + MAX_FEEDBACK])
            except (ValueError, zmq.ZMQError) as err:
                log.warning("client: cannot send feedback to %s: %s", self.feedback_address, err)

    def _on_control(self) -> None:
        while readable(self._ctl):
            frames = self._ctl.recv_multipart()
            try:
                _, head = decode(frames[-1], max_bytes=1 << 20)
            except WireError as err:
                self.stats["rejected"] += 1
                log.warning("client: rejected a control message: %s", err)
                continue
            if head.get("partition") != 0:
                continue
            now = self._book.heard = time.monotonic()
            if head.get("kind") == "ack" and isinstance(head.get("ids"), list):
                self._book.unacked.difference_update(head["ids"])
                self._link.acked(head["ids"], head.get("held"), now)
            if "links" in head:
                merge_link_report(self.link_reports, head["links"])
            if "policies" in head:
                merge_policy_reports(self.policies, head["policies"])

    # ----------------------------------------------------------------- links
    def probe(self) -> bool:
        """Send a probe along the input route if the input link's estimator asks for one.

        The first worker acknowledges a probe without running it; the round trip
        feeds the estimator of :attr:`route_tiers` (docs/adaptive.md).

        Returns:
            Whether a probe was sent.
        """
        rt = self.route_tiers
        probe = self._link.probe(rt) if self.input_route else None
        if probe is None:
            return False
        pid, size = probe
        msg = encode(np.zeros(size, np.uint8), kind="probe", ids=[pid], ack=self.control_address)
        if not self._sender.send(self.input_route, msg):
            return False
        self._link.sent(rt, pid, len(msg))
        return True

    def _check_first_worker(self) -> None:
        lost = self._book.expire(self.dead_after_s)
        if lost:
            log.warning(
                "client: the first partition is silent for over %g s; %d sample(s) "
                "finish without an exit, degraded",
                self.dead_after_s,
                lost,
            )

    def _drain(self, timeout_ms: int) -> None:
        sock = self._results
        if self._poller.poll(timeout_ms):
            # EVENTS, not a NOBLOCK receive until zmq.Again: no exception per drain
            while readable(sock):
                self._on_result(sock.recv_multipart(copy=False))
        self._on_control()
        self._check_first_worker()

    def poll(self, timeout_s: float = 0.0) -> list[Result]:
        """Results that arrived, waiting up to ``timeout_s`` for the first one.

        Returns:
            The new results (possibly none), each delivered once.
        """
        book = self._book
        deadline = time.monotonic() + timeout_s
        while not book.ready:
            left = deadline - time.monotonic()
            self._drain(max(0, min(100, int(left * 1000))))
            if left <= 0:
                break
        out, book.ready = book.ready, []
        return out

    @property
    def unacknowledged(self) -> int:
        """Samples sent that the first worker has not acknowledged (queued or in service there).

        With the first worker's acks sent at once (``ack_interval_s=0``) this is
        the first tier's number in system, which a load generator bounds.
        """
        return len(self._book.unacked)

    @property
    def in_flight(self) -> int:
        """Samples submitted whose result has not arrived."""
        return len(self._book.t0)

    def gather(self, ids: Iterable[int] | None = None, timeout_s: float = 30.0) -> list[Result]:
        """Wait for results.

        Args:
            ids: the ids to wait for (default: everything in flight and every
                result not yet returned); results of
                other ids that arrive meanwhile are kept for later calls.
            timeout_s: the longest wait.

        Returns:
            The results of ``ids``, in the order of ``ids``.

        Raises:
            TimeoutError: some results did not arrive in time (the message says how many).
        """
        book = self._book
        want = [r.id for r in book.ready] + list(book.t0) if ids is None else list(ids)
        wanted = set(want)
        got: dict[int, Result] = {}
        keep: list[Result] = []
        for r in book.ready:
            (got.__setitem__(r.id, r) if r.id in wanted else keep.append(r))
        book.ready = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(got) < len(wanted):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(wanted) - len(got)} of {len(wanted)} results did "
                        f"not arrive within {timeout_s:g} s"
                    )
                for r in self.poll(min(left, 0.1)):
                    (got.__setitem__(r.id, r) if r.id in wanted else keep.append(r))
        finally:
            if len(got) < len(wanted):  # a timeout: keep what did arrive for later calls
                keep.extend(got.values())
            book.ready = keep + book.ready
        return [got[i] for i in want]

    def infer(self, x: np.ndarray, timeout_s: float = 30.0) -> Result:
        """Submit one sample (no batch axis) and wait for its result."""
        (i,) = self.submit(np.asarray(x)[None])
        return self.gather([i], timeout_s)[0]

    def close(self) -> None:
        """Close the sockets (and the context if the client made it)."""
        self._sender.close()
        self._feedback.close()
        self._results.close(linger=0)
        self._ctl.close(linger=0)
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
