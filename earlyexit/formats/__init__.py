"""The files of ``docs/spec.md`` as typed dataclasses: Profile, Topology, Plan, Manifest.

Every class has ``from_dict`` / ``to_dict``, ``load(path)`` / ``save(path)`` and
checks the ``schema`` string and every field, raising ``ValueError`` or
``TypeError`` that names the offending field (never ``assert``). Writes are
atomic: a temporary file in the target directory, then ``os.replace``.

Profiles, plans and manifests are JSON; topologies are YAML (JSON is accepted
too, YAML being a superset).

Indexing: docs/spec.md numbers blocks 1..N. In memory, arrays are 0-based:
``Profile.exit_rate[t, i]`` is ER of branch ``i + 1`` at ``thresholds[t]``;
``DeviceProfile.partition_time_s[a, b]`` is the time of blocks ``a + 1 .. b + 1``
(upper triangle, ``a <= b``; the lower triangle is NaN in memory and ``null`` in
JSON); ``serialize_s[i]`` is the time for the output of block ``i`` with index 0
the model input, exactly as in docs/spec.md.

This package imports nothing else of ``earlyexit``: only the standard library,
numpy and (for YAML) pyyaml.

Example:
    >>> from earlyexit.formats import Topology
    >>> topo = Topology.from_dict({"schema": "earlyexit.topology/1",
    ...     "tiers": [{"name": "edge", "device": "pi"}, {"name": "cloud", "device": "gpu"}],
    ...     "links": [{"bandwidth_mbps": 10, "propagation_ms": 20}]})
    >>> topo.num_tiers, topo.mtu_bytes
    (2, 1500)
"""

from earlyexit.formats._common import (
    BREAKDOWN_KEYS,
    BREAKDOWN_OPTIONAL_KEYS,
    BUNDLE_SCHEMA,
    PLAN_SCHEMA,
    PROFILE_SCHEMA,
    TOPOLOGY_SCHEMA,
    atomic_write_text,
    digest,
)
from earlyexit.formats.manifest import Manifest, ManifestPartition
from earlyexit.formats.plan import Estimate, PartitionPlan, Plan
from earlyexit.formats.profile import DeviceProfile, Profile, ProfileSamples
from earlyexit.formats.topology import Link, Tier, Topology

__all__ = [
    "BREAKDOWN_KEYS",
    "BREAKDOWN_OPTIONAL_KEYS",
    "PROFILE_SCHEMA",
    "TOPOLOGY_SCHEMA",
    "PLAN_SCHEMA",
    "BUNDLE_SCHEMA",
    "DeviceProfile",
    "ProfileSamples",
    "Profile",
    "Tier",
    "Link",
    "Topology",
    "PartitionPlan",
    "Estimate",
    "Plan",
    "ManifestPartition",
    "Manifest",
    "digest",
    "atomic_write_text",
]
