"""The torch-free runtime: wire format, bundle sessions, tier workers, emulated links.

Nothing here imports torch, so a bundle runs on a board with only numpy,
onnxruntime and pyzmq. Names other than the wire format load lazily (PEP 562),
so ``import earlyexit.runtime.wire`` pulls in neither ZeroMQ nor ONNX Runtime.

Example:
    ```python
    from earlyexit.runtime import deploy
    with deploy("bundle/", topology="portend-aws") as d:
        result = d.client.infer(image)
    ```
"""

from __future__ import annotations

from earlyexit._lazy import lazy_exports
from earlyexit.runtime.wire import WireError, decode, encode

_LAZY = {
    "BundleSession": "earlyexit.runtime.session",
    "Client": "earlyexit.runtime.client",
    "Result": "earlyexit.runtime.client",
    "Deployment": "earlyexit.runtime.deployment",
    "deploy": "earlyexit.runtime.deployment",
    "Worker": "earlyexit.runtime.worker",
    "DirectedLink": "earlyexit.runtime.link",
    "SyntheticModel": "earlyexit.runtime.synthetic",
}

__all__ = [
    "BundleSession",
    "Client",
    "Deployment",
    "DirectedLink",
    "Result",
    "SyntheticModel",
    "WireError",
    "Worker",
    "decode",
    "deploy",
    "encode",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
