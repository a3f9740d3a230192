"""Hypothesis strategies: random small profiles and topologies for the exactness tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from earlyexit.formats import DeviceProfile, Link, Profile, ProfileSamples, Tier, Topology

# coarse values make exact ties (and so the tie-break) common
_COARSE = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0])
_TIME = st.one_of(_COARSE, st.floats(0.0, 3.0, allow_nan=False))


@st.composite
def problems(
    draw: st.DrawFn,
    max_blocks: int = 6,
    max_tiers: int = 4,
    samples: bool = True,
    hops: bool = True,
    busy: bool = False,
    clients: bool = False,
) -> tuple[Profile, Topology]:
    """A random (profile, topology) pair with 1..max_blocks blocks and 1..max_tiers tiers.

    With ``hops`` the devices' ``hop_s`` is absent, zero or random (up to 2 s,
    as large as any other term, so that it can change the optimum). With ``busy``
    each device's ``partition_time_busy_s`` is absent or 0.2 to 1.2 times its
    partition times (above 1: counted as the idle-gap time), and its
    ``idle_curve`` absent or one of a few (factors 1 to 3, with or without
    wake-up times of 0 to 1.5 s). With ``clients`` each device's ``client_curve``
    is absent or one of a few (the client's CPU growing by up to 1 s with its
    wait, so that it can change which configuration meets a latency bound).
    """
    n = draw(st.integers(1, max_blocks))
    m = draw(st.integers(1, max_tiers))
    n_thr = draw(st.integers(1, 3))
    thresholds = sorted(
        draw(
            st.sets(st.sampled_from([0.0, 0.2, 0.4, 0.5, 0.7, 1.0]), min_size=n_thr, max_size=n_thr)
        )
    )
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_dev = draw(st.integers(1, m))
    coarse = draw(st.booleans())

    def arr(shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
        if coarse:
            return rng.choice([0.0, 0.25, 0.5, 1.0], size=shape) * scale
        return rng.uniform(0.0, 1.0, size=shape) * scale

    # the runtime's hand-off cost: absent (old profiles), zero, or random per device
    hop_kind = draw(st.sampled_from(["absent", "zero", "random"])) if hops else "absent"
    devices = {}
    for k in range(n_dev):
        pt = np.triu(arr((n, n), 2.0) + 0.01 * coarse)
        pt = np.where(np.triu(np.ones((n, n), bool)), pt, np.nan)
        hop = {"absent": None, "zero": 0.0}.get(hop_kind)
        if hop_kind == "random":
            hop = float(arr((1,), draw(st.sampled_from([0.01, 0.3, 2.0])))[0])
        fast = curve = None
        if busy and draw(st.booleans()):
            fast = pt * rng.choice([0.2, 0.5, 0.9, 1.0, 1.2], size=(n, n))
        if busy and draw(st.booleans()):
            gaps = draw(st.sampled_from([[0.5], [0.1, 1.0], [0.01, 0.3, 3.0]]))
            curve = {"gap_s": gaps, "factor": list(1.0 + rng.choice([0.0, 0.3, 2.0], len(gaps)))}
            if draw(st.booleans()):  # wake-up times, not stretched
                curve["wake_s"] = list(np.cumsum(rng.choice([0.0, 0.05, 0.5], len(gaps))))
        client = None
        if clients and draw(st.booleans()):
            waits = draw(st.sampled_from([[0.5], [0.1, 2.0], [0.2, 1.0, 6.0]]))
            client = {"wait_s": waits,
                      "encode_s": list(np.cumsum(rng.choice([0.0, 0.05, 0.3], len(waits)))),
                      "decode_s": list(np.cumsum(rng.choice([0.0, 0.1, 0.7], len(waits))))}  # fmt: skip
        devices[f"d{k}"] = DeviceProfile(
            pt,
            arr((n + 1,), 0.1),
            arr((n + 1,), 0.1),
            float(arr((1,), 0.01)[0]),
            float(arr((1,), 0.01)[0]),
            hop_s=hop,
            partition_time_busy_s=fast,
            idle_curve=curve,
            client_curve=client,
        )
    s = draw(st.integers(1, 12))
    entropy = (
        rng.choice([0.05, 0.3, 0.45, 0.6, 0.9], size=(n, s))
        if coarse
        else rng.uniform(0, 1, (n, s))
    )
    correct = rng.random((n, s)) < 0.6
    if samples and draw(st.booleans()):
        # consistent with the samples: the exact and portend estimators share ER and A
        exit_rate = (entropy[None] < np.array(thresholds)[:, None, None]).mean(2)
        acc = correct.mean(1)
    else:
        exit_rate = arr((len(thresholds), n))  # not nested, portend's E_k may go negative
        acc = arr((n,))
    bits = rng.choice([800, 12000, 24000, 100000], size=n + 1)
    profile = Profile(
        model="rand",
        dataset="rand",
        num_blocks=n,
        num_classes=10,
        input_bits=int(bits[0]),
        output_bits=bits[1:],
        result_bits=int(rng.choice([64, 20000])),
        thresholds=thresholds,
        branch_accuracy=acc,
        exit_rate=exit_rate,
        devices=devices,
        samples=ProfileSamples(entropy, correct) if samples else None,
    )
    tiers = tuple(
        Tier(f"t{j}", f"d{draw(st.integers(0, n_dev - 1))}", draw(st.sampled_from([0.5, 1.0, 3.0])))
        for j in range(m)
    )
    links = tuple(
        Link(draw(st.sampled_from([1.0, 10.0, 400.0])), draw(st.sampled_from([0.0, 5.0, 40.0])))
        for _ in range(m - 1)
    )
    topo = Topology(
        tiers=tiers,
        links=links,
        mtu_bytes=draw(st.sampled_from([1500, 9000])),
        source=draw(st.integers(0, m - 1)),
        destination=draw(st.integers(0, m - 1)),
    )
    return profile, topo
