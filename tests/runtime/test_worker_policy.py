"""A worker's exit policy in process: AdaEE learns from feedback, and hostile feedback is ignored.

A fake next partition (tests/runtime/test_worker_loop.py) takes what the first
tier's worker forwards and acknowledges it; the test plays the destination and
sends ``feedback`` messages to the worker's control socket, well-formed or not.
"""

from __future__ import annotations

import contextlib
import json
import struct
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from earlyexit.runtime.chain import exit_step
from earlyexit.runtime.options import WorkerOptions
from earlyexit.runtime.policies import confidence
from earlyexit.runtime.synthetic import SyntheticModel
from earlyexit.runtime.wire import MAGIC, encode, encode_feedback
from earlyexit.runtime.worker import Worker
from tests.runtime.test_worker_loop import _Downstream, _feed, _first_partition

ADAEE = json.dumps({"policy": "adaee", "grid": [0.0, 0.5, 1.0], "seed": 0, "exploration": 0.1})


def _wait(cond, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while not cond() and time.monotonic() < end:
        time.sleep(0.02)
    return cond()


def _hostile_feedback() -> list[bytes]:
    """Feedback messages that decode but lie about their fields (each must be refused)."""
    empty = np.empty(0, np.uint8)
    nan = b'{"dtype":"uint8","shape":[0],"kind":"feedback","ids":[1],"confidence":[NaN]}'
    return [
        encode(empty, kind="feedback", ids=[1, 2], confidence=[0.5]),  # lengths differ
        encode(empty, kind="feedback", ids=[[1]], confidence=[0.5]),  # an id that is a list
        encode(empty, kind="feedback", ids=[1.5], confidence=[0.5]),
        encode(empty, kind="feedback", ids=[True], confidence=[0.5]),
        encode(empty, kind="feedback", ids=[1], confidence=[1.5]),  # not a probability
        encode(empty, kind="feedback", ids=[1], confidence=["0.5"]),
        encode(empty, kind="feedback", ids=[1], confidence=None),
        encode(empty, kind="feedback", ids="x", confidence=[0.5]),
        encode(empty, kind="feedback", ids=list(range(2000)), confidence=[0.5] * 2000),
        MAGIC + struct.pack("<I", len(nan)) + nan,  # JSON's NaN, which Python reads
    ]


@contextlib.contextmanager
def _first_tier(**kw: Any) -> Iterator[tuple[Worker, _Downstream, zmq.Socket, zmq.Context]]:
    """Partition 0 of 2 serving in a thread, its fake next partition, a socket to its control."""
    ctx = zmq.Context()
    down = _Downstream(ctx)
    worker, stop, t = _first_partition(down, **kw)
    ctl = ctx.socket(zmq.PUSH)
    ctl.setsockopt(zmq.LINGER, 1000)
    ctl.connect(worker.control_address)
    try:
        yield worker, down, ctl, ctx
        assert t.is_alive()  # nothing it was sent stopped it
    finally:
        stop.set()
        t.join(5)
        ctl.close(linger=0)
        worker.close()
        down.close()
        ctx.term()
    assert not t.is_alive()


def test_adaee_learns_from_feedback_and_survives_hostile_feedback():
    n = 60
    with _first_tier(policy=ADAEE) as (worker, down, ctl, ctx):
        _feed(worker, ctx, n)
        down.answer(1.0, ack=True)
        results = down.results_now()
        left = sorted(i for h in results for i in h["ids"])
        went_on = sorted(down.received)
        assert sorted(left + went_on) == list(range(n)) and left and went_on
        assert all(h["partition"] == 0 and not h["degraded"] for h in results)
        hostile = _hostile_feedback()
        for m in hostile:
            ctl.send(m)
        ctl.send(b"not a wire message")
        ctl.send(encode_feedback([10**9, -5], [0.5, 0.5]))  # never forwarded: unknown
        # the destination's feedback for every sample that went on, in two messages
        half = len(went_on) // 2
        for part in (went_on[:half], went_on[half:]):
            if part:
                ctl.send(encode_feedback(part, [0.99] * len(part)))
        assert _wait(lambda: worker.stats["feedback"] == len(went_on)), worker.stats
        assert _wait(lambda: worker.stats["feedback_rejected"] == len(hostile)), worker.stats
        s = worker.stats
        assert s["feedback_unknown"] == 2 and s["feedback_lost"] == 0
        assert s["rejected"] >= len(hostile) + 1  # the garbage too, as any control message
        assert worker._bandit.plays == n and worker._bandit.counts.sum() == pytest.approx(n)
        assert worker._bandit.pending.sum() == 0
        report = worker._policy_report()
        assert report["policy"] == "adaee" and report["feedback"] == len(went_on)
        assert report["awaiting"] == 0 and report["forwarded"] == len(went_on)
        # it still serves
        _feed(worker, ctx, 10)
        down.answer(0.5, ack=True)
        assert _wait(lambda: worker.stats["samples"] == n + 10)


def test_feedback_to_a_worker_without_adaee_is_refused_and_counted():
    with _first_tier() as (worker, down, ctl, ctx):  # the threshold rule
        assert worker.policy is None and worker._decide is None  # the vectorized path
        ctl.send(encode_feedback([1], [0.5]))
        _feed(worker, ctx, 3)
        down.answer(0.4, ack=True)
        assert _wait(lambda: worker.stats["feedback_rejected"] == 1), worker.stats
        assert sorted(down.received) == [0, 1, 2]
        # heartbeats from the next partition with policy reports, good and bad
        empty = np.empty(0, np.uint8)
        for policies in ([1, 2], {"1": "x"}, {"x": {"policy": "a"}}, {"1": {"deep": [[[]]]}},
                         {"1": {"policy": "probabilities", "p": [0.5] * 500}},
                         {"1": {"policy": "threshold", "threshold": 0.25}}):  # fmt: skip
            ctl.send(encode(empty, kind="heartbeat", partition=1, policies=policies))
        assert _wait(lambda: 1 in worker.policy_reports)
        time.sleep(0.1)
        assert worker.policy_reports[1] == {"policy": "threshold", "threshold": 0.25}


def test_the_probabilities_policy_decides_per_sample_at_the_workers_exit():
    """Partition 0 of 2 under p = (0.3, 0.7): about 30 % leave there, whatever their entropy."""
    model = SyntheticModel(num_partitions=2)
    spec = {"policy": "probabilities", "p": [0.3, 0.7], "seed": 5}
    opts = WorkerOptions(partition=0, num_partitions=2, threshold=0.5, policy=json.dumps(spec),
                         result_route=("tcp://127.0.0.1:9",),
                         next_route=("tcp://127.0.0.1:9",))  # fmt: skip
    worker = Worker(model.runner(0), opts)
    try:
        n = 2000
        step = exit_step(worker.runner, model.inputs(n), worker.threshold, False, worker._decide)
        share = len(step.leave) / n
        assert abs(share - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)
        assert step.features is not None and len(step.features) == n - len(step.leave)
        # the threshold rule would have sent a different set: the policy ignores the entropy
        plain = exit_step(worker.runner, model.inputs(n), 0.5, False)
        assert not np.array_equal(plain.leave, step.leave)
    finally:
        worker.close()


def test_confidence_is_the_largest_softmax_probability():
    logits = np.random.default_rng(0).standard_normal((5, 7))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(confidence(logits), p.max(1))


def test_the_knapsack_policy_leaves_early_when_the_rate_leaves_no_time():
    """At 10/s the budget fits the second exit (nobody leaves at 0); at 1000/s only the first."""
    model = SyntheticModel(num_partitions=2)
    x = model.inputs(50)
    left = {}
    for rate in (10.0, 1000.0):
        spec = {"policy": "knapsack", "exit_times": [0.001, 0.01], "exit_accuracy": [0.6, 0.9],
                "arrival_rate": rate}  # fmt: skip
        opts = WorkerOptions(partition=0, num_partitions=2, threshold=0.5, policy=json.dumps(spec),
                             result_route=("tcp://127.0.0.1:9",),
                             next_route=("tcp://127.0.0.1:9",))  # fmt: skip
        worker = Worker(model.runner(0), opts)
        try:
            step = exit_step(worker.runner, x, worker.threshold, False, worker._decide)
            left[rate] = len(step.leave)
        finally:
            worker.close()
    assert left == {10.0: 0, 1000.0: 50}
