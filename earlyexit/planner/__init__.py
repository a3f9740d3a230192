"""The planner: the performance model of docs/spec.md, an exact fast search, Pareto frontiers,
baselines and what-if studies. numpy only: it never imports torch.

Example:
    >>> from earlyexit.planner import plan, pareto
    >>> from earlyexit.planner.synthetic import synthetic_profile
    >>> prof = synthetic_profile(10)
    >>> p = plan(prof, "portend-aws", min_accuracy=0.6)
    >>> len(pareto(prof, "portend-aws")) >= 1
    True
"""

from earlyexit.planner.api import (
    baselines,
    cloud_only,
    edge_only,
    make_plan,
    neurosurgeon,
    pareto,
    plan,
)
from earlyexit.planner.estimators import (
    ESTIMATORS,
    exact_fractions,
    exit_fractions,
    portend_fractions,
)
from earlyexit.planner.latency import CostModel, evaluate
from earlyexit.planner.search import Candidate, search
from earlyexit.planner.space import HINTS, SearchSpace, make_space
from earlyexit.planner.topology import (
    BUILTIN_TOPOLOGIES,
    bind_devices,
    list_topologies,
    load_builtin_topology,
    resolve_profile,
    resolve_topology,
    tier_index,
)
from earlyexit.planner.whatif import whatif

__all__ = [
    "plan",
    "pareto",
    "evaluate",
    "baselines",
    "edge_only",
    "cloud_only",
    "neurosurgeon",
    "make_plan",
    "whatif",
    "search",
    "Candidate",
    "CostModel",
    "SearchSpace",
    "make_space",
    "HINTS",
    "ESTIMATORS",
    "exit_fractions",
    "portend_fractions",
    "exact_fractions",
    "BUILTIN_TOPOLOGIES",
    "list_topologies",
    "load_builtin_topology",
    "resolve_topology",
    "resolve_profile",
    "bind_devices",
    "tier_index",
]
