"""Every plot of earlyexit, in one package that owns matplotlib.

matplotlib is imported on the first plot, with the Agg backend (files only, no
display), so that importing this package costs nothing and the torch-free
packages (``planner``) can use it. Each function saves one figure and returns
it (closed, so nothing accumulates in pyplot): its axes hold the plotted data,
which is what the tests check.

- :func:`plot_pareto`: the Pareto frontier with the baselines (PORTEND Fig. 1, 7);
- :func:`plot_whatif`: a what-if sweep (Fig. 9);
- :func:`plot_profile`: exit rates, accuracy per exit and partition times of a profile;
- :func:`plot_deployment`: a measured deployment against the estimates;
- :func:`plot_final_accuracy`: final models' accuracy against the estimators;
- :func:`plot_adaptive`: latency over time on a link trace, adaptive against static and oracle;
- :func:`plot_load`: latency and loss ratio against the arrival rate, model and measured.

One module per family of figures (:mod:`~earlyexit.plotting.pareto`,
:mod:`~earlyexit.plotting.profile`, :mod:`~earlyexit.plotting.deployment`),
sharing :mod:`~earlyexit.plotting._style` (pyplot, the baselines' style,
:func:`save_figure`); every name is importable from here.
"""

from __future__ import annotations

from earlyexit.plotting._style import BASELINE_STYLE, pyplot, save_figure
from earlyexit.plotting.deployment import plot_adaptive, plot_deployment, plot_load
from earlyexit.plotting.pareto import plan_label, plot_pareto, plot_whatif
from earlyexit.plotting.profile import plot_final_accuracy, plot_profile

__all__ = [
    "BASELINE_STYLE",
    "pyplot",
    "save_figure",
    "plan_label",
    "plot_pareto",
    "plot_whatif",
    "plot_profile",
    "plot_deployment",
    "plot_final_accuracy",
    "plot_adaptive",
    "plot_load",
]
