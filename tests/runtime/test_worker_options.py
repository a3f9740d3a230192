"""Worker options: one typed object, built by deploy() and by every `earlyexit serve` flag."""

from __future__ import annotations

import dataclasses
import json
import threading

import numpy as np
import pytest

from earlyexit.runtime.client import Client
from earlyexit.runtime.options import WorkerOptions
from earlyexit.runtime.worker import Worker
from tests.test_cli_errors import write_bundle

_ROUTE = ("tcp://127.0.0.1:9",)


def test_options_round_trip_and_refuse_bad_values():
    o = WorkerOptions(partition=1, num_partitions=3, threshold=0.25, result_route=_ROUTE,
                      next_route=("ipc:///tmp/x", "tcp://127.0.0.1:7"), max_batch=8)  # fmt: skip
    assert WorkerOptions.from_dict(o.to_dict()) == o
    assert o.next_route == ("ipc:///tmp/x", "tcp://127.0.0.1:7") and not o.is_last
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.threshold = 0.5  # type: ignore[misc]
    base = {"partition": 0, "num_partitions": 1, "threshold": 0.5, "result_route": list(_ROUTE)}
    for change, needle in [
        ({"max_batch": 0}, "max_batch"),
        ({"hwm": 0}, "hwm"),
        ({"threshold": float("nan")}, "threshold"),
        ({"slowdown": float("inf")}, "slowdown"),
        ({"dead_after_s": 0.1, "heartbeat_s": 0.2}, "dead_after_s"),
        ({"batch_timeout_s": -1.0}, "batch_timeout_s"),
        ({"result_route": ["http://x"]}, "result_route"),
        ({"result_route": []}, "result_route"),
        ({"next_route": ["tcp://127.0.0.1:5"]}, "last one"),
        ({"partition": 1}, "partition"),
        ({"max_message_bytes": 10}, "max_message_bytes"),
        ({"policy": "lp"}, "policy: 'lp' is no policy name"),
        ({"policy": '{"policy": "adaee", "grid": []}'}, "grid"),
        ({"policy": {"policy": "probabilities", "p": [0.5, 0.5]}}, "the plan has 1 exits"),
        ({"cpu_latency_us": -1}, "cpu_latency_us must be None"),
        ({"cpu_latency_us": 2.5}, "integer number of microseconds"),
        ({"cpu_affinity": [0, 0]}, "lists a CPU twice"),
        ({"cpu_affinity": [-1]}, "is not a CPU number"),
    ]:
        with pytest.raises(ValueError, match=needle):
            WorkerOptions.from_dict({**base, **change})
    with pytest.raises(TypeError, match="unknown worker option"):
        WorkerOptions.from_dict({**base, "batch_size": 4})
    # a policy: given as a name, JSON or a file, kept as the same canonical JSON
    default = WorkerOptions.from_dict(base)
    assert json.loads(default.policy) == {"policy": "threshold"}
    named = WorkerOptions.from_dict({**base, "policy": "adaee"})
    assert WorkerOptions.from_dict(named.to_dict()) == named


def test_a_policy_file_is_read_once_into_the_options(tmp_path):
    spec = {"policy": "probabilities", "p": [0.25, 0.75], "seed": 2}
    (tmp_path / "p.json").write_text(json.dumps(spec))
    (tmp_path / "p.yaml").write_text("policy: probabilities\np: [0.25, 0.75]\nseed: 2\n")
    made = [
        WorkerOptions(
            partition=0,
            num_partitions=2,
            threshold=0.5,
            result_route=_ROUTE,
            next_route=_ROUTE,
            policy=str(tmp_path / name),
        )  # fmt: skip
        for name in ("p.json", "p.yaml")
    ]
    assert made[0] == made[1] and json.loads(made[0].policy) == spec


def _serve_args(bundle: str) -> list[str]:
    return [
        "serve", "--bundle", bundle, "--partition", "0",
        "--bind", "tcp://127.0.0.1:*", "--control-bind", "tcp://127.0.0.1:*",
        "--advertise", "tcp://10.0.0.2:5566",
        "--next", "tcp://10.0.0.5:1", "--next", "tcp://10.0.0.3:5557",
        "--results", "tcp://10.0.0.1:5558",
        "--threshold", "0.3", "--precision", "fp32", "--engine", "onnx", "--threads", "3",
        "--slowdown", "2.5", "--max-batch", "7", "--batch-timeout-ms", "4",
        "--hwm", "99", "--max-message-bytes", "2000000", "--dead-after", "3",
        "--policy", '{"policy": "adaee", "grid": [0.2, 0.6], "seed": 4}',
        "--cpu-latency-us", "20", "--cpu-affinity", "1,0",
    ]  # fmt: skip


def test_every_serve_flag_reaches_the_worker(tmp_path, monkeypatch):
    """Each flag of `earlyexit serve` lands in the WorkerOptions or the runner spec."""
    import earlyexit.runtime.worker as worker_mod
    from earlyexit.cli import main

    files = {1: {"onnx": b"\x08one"}, 2: {"onnx": b"\x08two"}}
    bundle = str(write_bundle(tmp_path / "b", files))
    seen: dict = {}

    def capture(runner_spec, options):
        seen["runner"], seen["options"] = runner_spec, options
        return 0

    monkeypatch.setattr(worker_mod, "serve_config", capture)
    argv = _serve_args(bundle)
    assert main(argv) == 0
    o, r = seen["options"], seen["runner"]
    assert isinstance(o, WorkerOptions)
    assert (o.partition, o.num_partitions, o.tier, o.last_block) == (0, 2, 0, 3)
    assert o.bind == "tcp://127.0.0.1:*" and o.control_bind == "tcp://127.0.0.1:*"
    assert o.advertise == "tcp://10.0.0.2:5566"
    assert o.next_route == ("tcp://10.0.0.5:1", "tcp://10.0.0.3:5557")
    assert o.result_route == ("tcp://10.0.0.1:5558",)
    assert o.threshold == 0.3 and o.slowdown == 2.5 and o.max_batch == 7
    assert o.batch_timeout_s == pytest.approx(0.004) and o.hwm == 99
    assert o.max_message_bytes == 2_000_000 and o.dead_after_s == 3.0
    assert json.loads(o.policy)["grid"] == [0.2, 0.6] and json.loads(o.policy)["seed"] == 4
    assert o.cpu_latency_us == 20 and o.cpu_affinity == (0, 1)
    assert r == {"kind": "bundle", "path": bundle, "partition": 0, "precision": "fp32",
                 "intra_op_threads": 3, "engine": "onnx"}  # fmt: skip
    # every flag is named here or reached generically: tests/runtime/test_cli_serve.py
    # --tier picks the partition the plan places there; the manifest's threshold by default
    argv2 = ["serve", "--bundle", bundle, "--tier", "1", "--results", "tcp://10.0.0.1:5558"]
    assert main(argv2) == 0
    assert seen["options"].partition == 1 and seen["options"].threshold == 0.5
    assert seen["options"].next_route == ()


def _failing_on_nan(x: np.ndarray):
    """A partition that raises on any input holding a NaN, else returns confident logits."""
    if np.isnan(x).any():
        raise FloatingPointError("NaN in the input")
    logits = np.zeros((len(x), 4), np.float32)
    logits[:, 0] = 10.0
    return logits, np.zeros(len(x), np.float32), None


@pytest.mark.parametrize("max_batch", [1, 8])
def test_a_failing_partition_answers_its_samples_as_failed_at_once(max_batch):
    with Client() as client:
        opts = WorkerOptions(partition=0, num_partitions=1, threshold=0.5, max_batch=max_batch,
                             batch_timeout_s=0.01, result_route=(client.results_address,))  # fmt: skip
        worker = Worker(_failing_on_nan, opts)
        stop = threading.Event()
        t = threading.Thread(target=worker.serve, args=(stop,), daemon=True)
        t.start()
        try:
            client.input_route = [worker.input_address]
            x = np.ones((12, 3), np.float32)
            x[[2, 7]] = np.nan
            ids = client.submit(x)  # one message each: grouped into batches when max_batch > 1
            results = client.gather(ids, timeout_s=10.0)  # a timeout here fails the test
        finally:
            stop.set()
            t.join(5)
            worker.close()
    failed = [r.id for r in results if r.failed]
    assert failed == [ids[2], ids[7]]  # only the samples whose input made it raise
    for r in results:
        if r.failed:
            assert r.logits is None and r.prediction is None and r.degraded
            assert r.partition == 0 and "NaN in the input" in (r.error or "")
        else:
            assert r.prediction == 0 and not r.degraded
    assert worker.stats["failed"] == 2 and client.stats["failed"] == 2
