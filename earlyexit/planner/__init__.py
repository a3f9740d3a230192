"""The planner: SPEC's performance model, an exact fast search, Pareto frontiers,
baselines and what-if studies. numpy only: it never imports torch."""
