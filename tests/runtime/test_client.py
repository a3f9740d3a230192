"""The client's request bookkeeping (runtime/_requests.py), without sockets or processes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from earlyexit.runtime._requests import Ledger, Result


def _result(i: int, degraded: bool = False) -> Result:
    return Result(i, np.array([0.1, 0.9], np.float32), 0.2, 1, 4, 1, degraded, 0.01)


def test_ids_are_fresh_or_checked():
    book = Ledger()
    assert book.new_ids(3) == [0, 1, 2]
    assert book.new_ids(2, [7, np.int64(9)]) == [7, 9]
    with pytest.raises(ValueError, match="got 1 ids for 2 samples"):
        book.new_ids(2, [5])
    book.t0[7] = 0.0  # 7 is in flight
    with pytest.raises(ValueError, match=r"ids \[7\] are already in flight"):
        book.new_ids(2, [7, 8])


def test_each_id_is_answered_once_and_unknown_ids_are_duplicates():
    book = Ledger()
    ids = book.new_ids(2)
    for i in ids:
        book.t0[i] = time.perf_counter()
    book.sent(ids)
    assert book.unacked == {0, 1} and book.stats["submitted"] == 2
    book.deliver(_result(0))
    book.deliver(_result(0))  # a late copy
    book.deliver(_result(42))  # never submitted
    book.deliver(_result(1, degraded=True))
    assert [r.id for r in book.ready] == [0, 1]
    assert book.t0 == {} and book.unacked == set()
    assert {k: book.stats[k] for k in ("delivered", "degraded", "duplicates")} == {
        "delivered": 2,
        "degraded": 1,
        "duplicates": 2,
    }


def test_latency_counts_from_submission():
    book = Ledger()
    book.t0[3] = 10.0
    assert book.latency(3, 10.25) == 0.25
    assert book.latency(4, 10.25) == 0.0  # unknown: nothing to measure


def test_a_silent_first_worker_answers_its_unacknowledged_samples_degraded():
    book = Ledger()
    ids = book.new_ids(3)
    t0 = time.perf_counter()
    for i in ids:
        book.t0[i] = t0
    book.sent(ids)
    book.unacked.discard(0)  # acknowledged: the first worker passed it on
    assert book.expire(dead_after_s=60.0) == 0  # heard just now: alive
    book.heard = time.monotonic() - 5.0
    assert book.expire(dead_after_s=2.0) == 2
    lost = {r.id: r for r in book.ready}
    assert sorted(lost) == [1, 2]
    for r in lost.values():
        assert (r.partition, r.logits, r.degraded, r.prediction) == (-1, None, True, None)
        assert r.latency_s >= 0.0
    assert book.t0 == {0: t0} and book.unacked == set()
    assert book.expire(dead_after_s=2.0) == 0  # nothing left to answer


def test_a_result_message_answers_its_ids_and_a_failed_one_says_why():
    book = Ledger()
    for i in (0, 1, 2, 3):
        book.t0[i] = 1.0
    logits = np.array([[0.0, 2.0], [3.0, 1.0]], np.float32)
    head = {"partition": 1, "block": 6, "tier": 2, "degraded": True}
    rows = np.vstack([logits[:1], logits])  # the row of "x" (not an id) is skipped
    book.answer(head, [0, "x", 1], rows, [0.1, 0.0, 0.3], 1.5)
    book.answer({"partition": 0, "failed": True, "error": "boom" * 100}, [2, 3], logits, [], 2.0)
    got = {r.id: r for r in book.ready}
    assert sorted(got) == [0, 1, 2, 3]
    assert (got[0].prediction, got[1].prediction) == (1, 0)
    assert (got[0].entropy, got[1].entropy) == (0.1, 0.3)
    assert (got[1].partition, got[1].block, got[1].tier, got[1].degraded) == (1, 6, 2, True)
    assert got[0].latency_s == 0.5 and got[3].latency_s == 1.0
    for i in (2, 3):
        assert (got[i].failed, got[i].logits, got[i].partition, got[i].degraded) == (
            True, None, 0, True,
        )  # fmt: skip
        assert got[i].error == ("boom" * 100)[:300]
    assert {k: book.stats[k] for k in ("delivered", "failed", "degraded")} == {
        "delivered": 4,
        "failed": 2,
        "degraded": 4,
    }


def test_the_input_link_is_timed_from_send_to_ack_minus_the_time_held():
    from earlyexit.runtime._input_link import InputLink

    link = InputLink()
    link.sent(None, 100, 5000)  # no route tiers: nothing to time
    link.sent((1, 1), 101, 5000)  # one tier: no link
    link.acked([100, 101], [0.0, 0.0], time.monotonic() + 1.0)
    assert link.estimators == {} and link.reports == {}
    # 8 Mb/s and 5 ms: 1000 B take 6 ms, 21000 B 26 ms; the worker held each 2 ms
    t_ack = 0.0
    for i, nbytes in enumerate([1000, 21_000] * 3):
        link.sent((0, 1), i, nbytes)
        t_ack = link._sent[i][0] + 8 * nbytes / 8e6 + 0.005 + 0.002
        link.acked([i], [0.002], t_ack)
    bw, delay_ms, at = link.reports[(0, 1)]
    assert bw == pytest.approx(8.0, rel=1e-6) and delay_ms == pytest.approx(5.0, abs=1e-6)
    assert at == t_ack


def test_input_link_probes_have_their_own_ids_and_only_where_there_is_a_link():
    from earlyexit.runtime._input_link import InputLink

    link = InputLink()
    assert link.probe(None) is None and link.probe((2, 2)) is None
    first, second = link.probe((0, 1)), link.probe((0, 1))
    assert first is not None and second is not None
    assert first[0] < -(2**62) and second[0] < first[0]  # never a sample's id
    assert first[1] in (64, 32_768)  # a size the estimator asks for
