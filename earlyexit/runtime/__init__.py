"""The torch-free runtime: wire format, bundle sessions, tier workers, emulated links.

Nothing here imports torch, so a bundle runs on a board with only numpy and
onnxruntime.
"""

from earlyexit.runtime.wire import WireError, decode, encode

__all__ = ["WireError", "decode", "encode"]
