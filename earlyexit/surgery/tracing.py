"""``torch.fx`` tracing that works where timm and torchvision trace, without touching the model.

The tracer treats as leaves the modules that timm and torchvision keep opaque
(timm's ``register_notrace_module`` list, every ``torchvision.ops`` module),
wraps the functions they wrap (timm's ``register_notrace_function`` list, the
``math`` and ``torchvision.ops`` modules), and adds any that the user registers
with :func:`register_leaf_module` / :func:`register_autowrap_function`.

Optional ``forward`` arguments (``attn_mask=None`` in timm's ViT) are fixed to
their defaults, so they do not become graph inputs. Tracing runs on a private
copy of the model, and any Python state that tracing writes into that copy
(LeViT's and EfficientFormer's attention-bias caches) is put back, so neither
the user's model nor the traced modules keep a trace placeholder.
"""

from __future__ import annotations

import copy
import inspect
import math
import sys
from collections.abc import Callable
from typing import Any

import torch.fx as fx
from torch import nn

from earlyexit.surgery._probe import eval_mode

__all__ = ["register_autowrap_function", "register_leaf_module", "trace"]

_LEAF_MODULES: list[type] = []
_AUTOWRAP_FUNCTIONS: list[Callable] = []


def register_leaf_module(cls: type) -> type:
    """Trace modules of type ``cls`` (and subclasses) as single opaque calls.

    Args:
        cls: an ``nn.Module`` subclass whose ``forward`` cannot be traced.

    Returns:
        ``cls`` unchanged, so this can be used as a class decorator.

    Raises:
        TypeError: if ``cls`` is not an ``nn.Module`` subclass.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_leaf_module expects an nn.Module subclass, got {cls!r}")
    if cls not in _LEAF_MODULES:
        _LEAF_MODULES.append(cls)
    return cls


def register_autowrap_function(fn: Callable) -> Callable:
    """Record calls to the module-level function ``fn`` as single graph nodes.

    Args:
        fn: a function defined at module level (``torch.fx`` patches it by name
            in its module's globals while tracing).

    Returns:
        ``fn`` unchanged, so this can be used as a decorator.

    Raises:
        TypeError: if ``fn`` is not callable.
    """
    if not callable(fn):
        raise TypeError(f"register_autowrap_function expects a function, got {fn!r}")
    if fn not in _AUTOWRAP_FUNCTIONS:
        _AUTOWRAP_FUNCTIONS.append(fn)
    return fn


def _third_party_settings() -> tuple[list[type], list[Callable], tuple[Any, ...]]:
    """timm's and torchvision's fx settings, for the libraries already imported."""
    leaves: list[type] = []
    functions: list[Callable] = []
    modules: list[Any] = [math]
    if "timm" in sys.modules:
        try:
            from timm.layers import _fx as timm_fx

            leaves += list(timm_fx._leaf_modules)
            functions += [f for f in timm_fx._autowrap_functions if callable(f)]
        except ImportError:  # pragma: no cover - older timm
            pass
    if "torchvision" in sys.modules:
        import torchvision

        modules.append(torchvision.ops)
        leaves += [
            obj
            for obj in vars(torchvision.ops).values()
            if isinstance(obj, type) and issubclass(obj, nn.Module)
        ]
    return leaves, functions, tuple(modules)


class _InputProxy(fx.Proxy):
    """The model's input, with a known sample shape.

    ``x.ndim`` and ``x.dim()`` are always constants; with ``dims`` set,
    ``x.shape`` and ``x.size()`` are too, except the batch size, which stays
    symbolic (``x.size(0)``).
    """

    def __init__(
        self, node: fx.Node, tracer: fx.Tracer, sample: tuple[int, ...], dims: bool
    ) -> None:
        super().__init__(node, tracer)
        self._sample = sample
        self._dims = dims

    @property
    def ndim(self) -> int:
        return len(self._sample) + 1

    def dim(self) -> int:
        return len(self._sample) + 1

    @property
    def shape(self) -> Any:
        if not self._dims:
            return self.__getattr__("shape")
        return (self.tracer.create_proxy("call_method", "size", (self, 0), {}), *self._sample)

    def size(self, dim: int | None = None) -> Any:
        if not self._dims:
            return self.__getattr__("size")(*(() if dim is None else (dim,)))
        if dim is None:
            return self.shape
        return self.shape[dim] if dim not in (0, -len(self._sample) - 1) else self.shape[0]


class _Tracer(fx.Tracer):
    def __init__(
        self,
        leaves: tuple[type, ...],
        sample: tuple[int, ...] | None,
        dims: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._leaves = leaves
        self._sample = sample
        self._dims = dims
        self._first_input = True

    def proxy(self, node: fx.Node) -> fx.Proxy:
        if node.op == "placeholder" and self._first_input and self._sample is not None:
            self._first_input = False
            return _InputProxy(node, self, self._sample, self._dims)
        return super().proxy(node)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self._leaves and isinstance(m, self._leaves):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _concrete_args(model: nn.Module) -> dict[str, Any]:
    """Fix every optional ``forward`` argument after the first to its default."""
    params = list(inspect.signature(model.forward).parameters.values())
    fixed: dict[str, Any] = {}
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise ValueError(
                f"{type(model).__name__}.forward has a second required argument {p.name!r}; "
                "only models called as model(x) can be decomposed"
            )
        fixed[p.name] = p.default
    return fixed


def _drop_specialized_inputs(graph: fx.Graph) -> None:
    """Remove the placeholders of fixed arguments and the checks fx adds on them."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    doomed: list[fx.Node] = []
    stack = list(placeholders[1:])
    seen: set[fx.Node] = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        doomed.append(node)
        stack.extend(node.users)
    order = {n: i for i, n in enumerate(graph.nodes)}
    for node in sorted(doomed, key=order.__getitem__, reverse=True):
        if any(u not in seen for u in node.users):  # pragma: no cover - defensive
            raise ValueError(f"optional input {node.name!r} is used by the model's computation")
        graph.erase_node(node)


_SKIP_STATE = {"_parameters", "_buffers", "_modules", "training"}


def _snapshot(model: nn.Module) -> list[tuple[nn.Module, dict[str, tuple[Any, Any]]]]:
    """Every module's plain attributes: the object, and a shallow copy of a container."""
    state = []
    for m in model.modules():
        attrs = {}
        for k, v in vars(m).items():
            if k not in _SKIP_STATE:
                attrs[k] = (v, copy.copy(v) if isinstance(v, (dict, list, set)) else None)
        state.append((m, attrs))
    return state


def _restore(state: list[tuple[nn.Module, dict[str, tuple[Any, Any]]]]) -> None:
    """Undo what tracing wrote into plain attributes (new keys, replaced or mutated values)."""
    for m, attrs in state:
        for k in [k for k in vars(m) if k not in _SKIP_STATE and k not in attrs]:
            delattr(m, k)
        for k, (obj, saved) in attrs.items():
            if vars(m).get(k) is not obj:
                object.__setattr__(m, k, obj)
            if saved is not None and not _same(obj, saved):
                obj.clear()
                if isinstance(obj, list):
                    obj.extend(saved)
                else:
                    obj.update(saved)


def _same(a: Any, b: Any) -> bool:
    """Identity of the items of two containers (no ``==`` on tensors or proxies)."""
    if len(a) != len(b):
        return False
    if isinstance(a, dict):
        return all(k in b and a[k] is b[k] for k in a)
    if isinstance(a, set):
        return all(any(x is y for y in b) for x in a)
    return all(x is y for x, y in zip(a, b, strict=True))


def trace(
    model: nn.Module,
    leaf_modules: tuple[type, ...] | list[type] = (),
    autowrap_functions: tuple[Callable, ...] | list[Callable] = (),
    copy_model: bool = True,
    input_shape: tuple[int, ...] | None = None,
) -> fx.GraphModule:
    """Trace ``model`` (in eval mode) into an ``fx.GraphModule`` with one input.

    Args:
        model: the module to trace; it is never modified.
        leaf_modules: extra module types to keep opaque, on top of timm's,
            torchvision's and the registered ones.
        autowrap_functions: extra module-level functions to record as single nodes.
        copy_model: trace a deep copy (default); ``False`` traces ``model`` itself,
            for a caller that already holds a private copy.
        input_shape: shape of one sample. When given, ``x.ndim`` and ``x.dim()``
            of the input are constants, and if the model still does not trace
            (``if H % 16 != 0: raise ...``), it is traced again with the input's
            sizes other than the batch size as constants.

    Returns:
        A ``GraphModule`` sharing its submodules with the traced copy; its nodes
        carry ``meta["nn_module_stack"]``. The submodules keep ``model``'s
        train/eval modes.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: if the model cannot be traced.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"trace expects an nn.Module, got {type(model).__name__}")
    target = copy.deepcopy(model) if copy_model else model
    leaves, functions, modules = _third_party_settings()
    leaves = tuple(dict.fromkeys([*leaves, *_LEAF_MODULES, *leaf_modules]))
    functions = list(dict.fromkeys([*functions, *_AUTOWRAP_FUNCTIONS, *autowrap_functions]))
    concrete = _concrete_args(target)
    sample = None if input_shape is None else tuple(int(s) for s in input_shape)
    attempts = (False, True) if sample is not None else (False,)
    for dims in attempts:
        tracer = _Tracer(
            leaves, sample, dims, autowrap_modules=modules, autowrap_functions=tuple(functions)
        )
        try:
            return _trace_once(target, tracer, concrete, type(model).__name__)
        except Exception as failure:  # torch.fx raises many kinds
            err = failure  # the last attempt's error (constant sizes) says more
    raise ValueError(
        f"{type(model).__name__} cannot be traced by torch.fx "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); mark the "
        "module that fails with earlyexit.surgery.register_leaf_module, or register a "
        "decomposer with earlyexit.surgery.register_decomposer"
    ) from err


def _trace_once(
    target: nn.Module, tracer: fx.Tracer, concrete: dict[str, Any], name: str
) -> fx.GraphModule:
    """One trace of ``target`` in eval mode; its modes and plain attributes are restored."""
    state = _snapshot(target)
    with eval_mode(target):
        try:
            graph = tracer.trace(target, concrete_args=concrete or None)
            _drop_specialized_inputs(graph)
            # built before the restore: constants fx stored on the root move into gm
            gm = fx.GraphModule(target, graph, class_name=name)
        finally:
            _restore(state)
    gm.training = target.training
    return gm
