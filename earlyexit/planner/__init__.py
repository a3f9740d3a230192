"""The planner: the performance model of docs/spec.md, an exact fast search, Pareto frontiers,
baselines, what-if studies, and the model under load (queues, loss, capacity, the LP and
knapsack schedulers). numpy only: it never imports torch.

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
    plan_capacity,
)
from earlyexit.planner.estimators import (
    ESTIMATORS,
    exact_fractions,
    exit_fractions,
    portend_fractions,
)
from earlyexit.planner.latency import CostModel, evaluate
from earlyexit.planner.queueing import LoadEstimate, Station, evaluate_load
from earlyexit.planner.schedulers import ExitSchedule, knapsack_budget, knapsack_exit, lp_schedule
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
    "plan_capacity",
    "evaluate_load",
    "LoadEstimate",
    "Station",
    "lp_schedule",
    "ExitSchedule",
    "knapsack_budget",
    "knapsack_exit",
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
