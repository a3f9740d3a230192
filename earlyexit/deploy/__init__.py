"""Deploy a plan's partitions for real: Kubernetes manifests, a compose file, network namespaces.

Reads bundles, plans, topologies and profiles (:mod:`earlyexit.formats`) and
writes files; every target runs the same ``earlyexit serve`` command line per
tier (:func:`~earlyexit.deploy.tiers.serve_argv`). Imports neither torch nor
the runtime's internals (the probe uses the public ``earlyexit.runtime.client``).
See docs/deployment.md.
"""

from earlyexit._lazy import lazy_exports

__all__ = [
    "TierWorker",
    "plan_workers",
    "serve_argv",
    "k8s_objects",
    "write_k8s",
    "compose_spec",
    "write_compose",
    "LocalChain",
    "netns_unavailable",
    "KUBERNETES_VERSION",
    "CONFIGMAP_MAX_BYTES",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TierWorker": "earlyexit.deploy.tiers",
        "plan_workers": "earlyexit.deploy.tiers",
        "serve_argv": "earlyexit.deploy.tiers",
        "k8s_objects": "earlyexit.deploy.k8s",
        "write_k8s": "earlyexit.deploy.k8s",
        "KUBERNETES_VERSION": "earlyexit.deploy.k8s",
        "CONFIGMAP_MAX_BYTES": "earlyexit.deploy.k8s",
        "compose_spec": "earlyexit.deploy.compose",
        "write_compose": "earlyexit.deploy.compose",
        "LocalChain": "earlyexit.deploy.netns",
        "netns_unavailable": "earlyexit.deploy.netns",
    },
    __all__,
)
