"""The tier worker's loop: it sleeps in its input's receive and reads control messages when due.

A fake next partition (two sockets in the test) receives the features a real
worker forwards and answers, or not, with acks and heartbeats, so that what the
worker does with control messages it reads only at its ticks is observable.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import zmq

from earlyexit.runtime.options import WorkerOptions
from earlyexit.runtime.synthetic import SyntheticModel
from earlyexit.runtime.wire import decode, encode, encode_batch
from earlyexit.runtime.worker import Worker


class _Downstream:
    """A stand-in for partition 1: receives features; acks and beats when told to."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.inp = ctx.socket(zmq.PULL)
        self.inp.bind("tcp://127.0.0.1:*")
        self.address = self.inp.getsockopt_string(zmq.LAST_ENDPOINT)
        self.results = ctx.socket(zmq.PULL)
        self.results.bind("tcp://127.0.0.1:*")
        self.results_address = self.results.getsockopt_string(zmq.LAST_ENDPOINT)
        self.ctx = ctx
        self.ctl: zmq.Socket | None = None
        self.received: list[int] = []

    def answer(self, seconds: float, ack: bool) -> None:
        """For ``seconds``: take features in, ack them (if ``ack``) and send heartbeats."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.inp.poll(20):
                _, head = decode(self.inp.recv())
                self.received.extend(head["ids"])
                if self.ctl is None:
                    self.ctl = self.ctx.socket(zmq.PUSH)
                    self.ctl.setsockopt(zmq.LINGER, 0)
                    self.ctl.connect(head["ack"])
                if ack:
                    self.ctl.send(encode(np.empty(0, np.uint8), kind="ack", partition=1,
                                         ids=head["ids"], held=[0.0] * len(head["ids"])))  # fmt: skip
            if ack and self.ctl is not None:
                self.ctl.send(encode(np.empty(0, np.uint8), kind="heartbeat", partition=1))

    def results_now(self) -> list[dict]:
        out = []
        while self.results.poll(0):
            out.append(decode(self.results.recv())[1])
        return out

    def close(self) -> None:
        for s in (self.inp, self.results, self.ctl):
            if s is not None:
                s.close(linger=0)


def _first_partition(
    down: _Downstream, **kw: float
) -> tuple[Worker, threading.Event, threading.Thread]:
    model = SyntheticModel(num_partitions=2)
    opts = WorkerOptions(
        partition=0, num_partitions=2, threshold=0.0,  # nobody leaves at partition 0
        result_route=(down.results_address,), next_route=(down.address,),
        heartbeat_s=0.05, dead_after_s=0.3, **kw,
    )  # fmt: skip
    worker = Worker(model.runner(0), opts, context=down.ctx)
    stop = threading.Event()
    t = threading.Thread(target=worker.serve, args=(stop,), daemon=True)
    t.start()
    return worker, stop, t


def _feed(worker: Worker, ctx: zmq.Context, n: int) -> None:
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(worker.input_address)
    x = SyntheticModel(num_partitions=2).inputs(n)
    for i in range(n):
        push.send(encode_batch(x[i : i + 1], "input", [i]))
    push.close()


def test_acks_read_at_ticks_keep_the_next_partition_alive_and_the_pending_empty():
    ctx = zmq.Context()
    down = _Downstream(ctx)
    worker, stop, t = _first_partition(down)
    try:
        _feed(worker, ctx, 20)
        down.answer(1.2, ack=True)  # four times dead_after_s: acks and beats all along
        assert sorted(down.received) == list(range(20))
        assert not worker.downstream_dead and worker._pending == {}
        assert down.results_now() == []  # nothing degraded
    finally:
        stop.set()
        t.join(5)
        worker.close()
        down.close()
        ctx.term()
    assert not t.is_alive()  # the receive's timeout lets the loop see stop


def test_a_silent_next_partition_is_declared_dead_while_the_worker_sleeps_in_receive():
    ctx = zmq.Context()
    down = _Downstream(ctx)
    worker, stop, t = _first_partition(down)
    try:
        _feed(worker, ctx, 5)
        down.answer(0.2, ack=False)  # takes the features, never answers
        deadline = time.monotonic() + 10.0
        got: list[dict] = []
        while len(got) < 5 and time.monotonic() < deadline:
            got += down.results_now()
            time.sleep(0.02)
        assert worker.downstream_dead
        # the five samples finish at partition 0's exit, degraded, each once
        assert sorted(i for h in got for i in h["ids"]) == list(range(5))
        assert all(h["degraded"] and h["partition"] == 0 for h in got)
    finally:
        stop.set()
        t.join(5)
        worker.close()
        down.close()
        ctx.term()


def test_micro_batches_and_single_messages_route_alike():
    """max_batch 1 (the lean path) and 8 (the batch path) forward the same samples."""
    for max_batch in (1, 8):
        ctx = zmq.Context()
        down = _Downstream(ctx)
        worker, stop, t = _first_partition(down, max_batch=max_batch, batch_timeout_s=0.005)
        try:
            _feed(worker, ctx, 30)
            down.answer(0.8, ack=True)
            assert sorted(down.received) == list(range(30)), max_batch
            assert worker.stats["received"] == 30 and worker.stats["forwarded"] == 30
            assert (
                worker.stats["batches"] == 30 if max_batch == 1 else worker.stats["batches"] <= 30
            )
        finally:
            stop.set()
            t.join(5)
            worker.close()
            down.close()
            ctx.term()
