"""An optimized PyTorch module's plan as a BrainSlug file (`runtime.bundle`):
`encode` and `decode`, for `saved.save/load` and for pickling.

The file holds, as data: the plan's fx graph (nodes, the
functions they call by qualified name), every module it calls (PyTorch's and
BrainSlug's, by class and state), the parameters and buffers (safetensors
layout), the report, and the state_dict keys of the original model; and the
kernels (`plan.saved`): their object code and their `nn` IR. Loading builds the
module from that without the model's class, without tracing and, when the CPU
and versions match, without compiling.

Only PyTorch's and BrainSlug's classes are rebuilt from a file; functions
named by the graph are imported by name. The object code runs on load, like a
shared library: load only files you trust.

Pickling an optimized module (`pickle`, `copy.deepcopy`, `torch.save`) goes
through the same format, with the original model pickled beside it and the
plan's tensors referring to the model's own.
"""

from __future__ import annotations

import collections
import importlib
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch.fx.node import _get_qualified_name

from brainslug.frontend_torch.bind import allocate_f32
from brainslug.frontend_torch.kernel_module import StackKernel
from brainslug.frontend_torch.param_views import attr_at
from brainslug.plan.arena import Arena
from brainslug.plan.loaded import load_kernels
from brainslug.plan.report import PlanInfo
from brainslug.plan.saved import PlanKernels, SaveError, kernel_sections
from brainslug.runtime import bundle

KIND = "brainslug.pytorch"
VERSION = 1
"""Bump when the encoding of the plan changes."""

DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
          torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
          torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
TORCH_DTYPES = {v: k for k, v in DTYPES.items()}
FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType, types.MethodDescriptorType,
             types.WrapperDescriptorType, types.ClassMethodDescriptorType, type,
             torch._ops.OpOverload, torch._ops.OpOverloadPacket)
"""Values stored by name (the functions a graph calls)."""
CLASS_PREFIXES = ("torch.", "brainslug.")
"""Modules whose classes a file may rebuild (PyTorch's layers and BrainSlug's own)."""
_SKIPPED = {StackKernel: ("runner", "_checked", "_dims")}
"""State that is rebuilt on load rather than stored."""
_MODULE_DEFAULTS = frozenset(torch.nn.Module().__dict__) - {"training"}
"""nn.Module's own bookkeeping, stored only where it is not empty."""


def _qualified(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve(path: str) -> Any:
    """The object named `module:qualname`, or by a dotted name (the longest
    importable prefix, then attributes)."""
    if ":" in path:
        mod, _, qual = path.partition(":")
        obj: Any = importlib.import_module(mod)
        for part in qual.split("."):
            obj = getattr(obj, part)
        return obj
    parts = path.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for part in parts[k:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(f"no module for {path!r}")


def _function_name(fn: Any, where: str) -> str:
    """A name that `_resolve` turns back into `fn`."""
    names = []
    if isinstance(fn, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
        names.append(_get_qualified_name(fn))
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if mod and qual and "<" not in qual:
        names.append(f"{mod}:{qual}")
    try:
        names.append(_get_qualified_name(fn))
    except Exception:
        pass
    for name in names:
        try:
            if _resolve(name) is fn:
                return name
        except Exception:
            continue
    raise SaveError(f"{where}: calls {fn!r}, which can't be found again by its name "
                    f"(a lambda or a local function)")


class _Encoder:
    """The plan as plain JSON, with its tensors in a table."""

    def __init__(self, external: dict[int, str] | None = None):
        self.external = external or {}
        self.tensors: list[torch.Tensor] = []
        self.objects: list[dict[str, Any]] = []
        self._ids: dict[int, dict[str, int]] = {}
        self._alive: list[Any] = []  # (ids stay unique while encoding)

    def value(self, v: Any, where: str) -> Any:
        if v is None or isinstance(v, bool | int | str):
            return v
        if isinstance(v, float):
            return v if np.isfinite(v) else {"$float": repr(v)}
        if isinstance(v, torch.Tensor):
            return self.tensor(v, where)
        if isinstance(v, fx.Node):
            return {"$node": v.name}
        if isinstance(v, tuple) and not isinstance(v, torch.Size):
            return {"$tuple": [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]}
        if isinstance(v, list):
            return [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, dict):
            kind = "$odict" if isinstance(v, collections.OrderedDict) else "$dict"
            return {kind: [[self.value(k, where), self.value(x, f"{where}.{k}")]
                           for k, x in v.items()]}
        if isinstance(v, set | frozenset):
            kind = "$frozenset" if isinstance(v, frozenset) else "$set"
            return {kind: [self.value(x, where) for x in sorted(v, key=repr)]}
        if isinstance(v, slice):
            return {"$slice": [self.value(x, where) for x in (v.start, v.stop, v.step)]}
        simple = self._simple(v)
        if simple is not None:
            return simple
        if isinstance(v, FUNCTIONS):
            return {"$fn": _function_name(v, where)}
        return {"$obj": self.obj(v, where)}

    @staticmethod
    def _simple(v: Any) -> dict[str, Any] | None:
        if isinstance(v, torch.Size):
            return {"$size": list(v)}
        if isinstance(v, torch.dtype):
            return {"$dtype": str(v).removeprefix("torch.")}
        if isinstance(v, torch.device):
            return {"$device": str(v)}
        if isinstance(v, torch.memory_format):
            return {"$memory_format": str(v).removeprefix("torch.")}
        if isinstance(v, torch.layout):
            return {"$layout": str(v).removeprefix("torch.")}
        if v is Ellipsis:
            return {"$ellipsis": True}
        return None

    def tensor(self, t: torch.Tensor, where: str) -> dict[str, Any]:
        if id(t) in self.external:
            return {"$external": self.external[id(t)]}
        memo = self._ids.setdefault(id(t), {})
        if "tensor" not in memo:
            if t.dtype not in DTYPES or t.device.type != "cpu" or t.is_sparse or t.is_mkldnn:
                raise SaveError(f"{where}: a {t.dtype} tensor on {t.device} can't be saved "
                                f"(dense CPU tensors of {', '.join(map(str, DTYPES))} can)")
            memo["tensor"] = len(self.tensors)
            self.tensors.append(t)
            self._alive.append(t)
        return {"$tensor": memo["tensor"]}

    def obj(self, o: Any, where: str) -> int:
        memo = self._ids.setdefault(id(o), {})
        if "obj" in memo:
            return memo["obj"]
        memo["obj"] = k = len(self.objects)
        self.objects.append({})
        self._alive.append(o)
        if isinstance(o, fx.GraphModule):
            self.objects[k] = {"graph": self.graph(o, where)}
            return k
        if isinstance(o, Arena):
            self.objects[k] = {"arena": self.value(o.plan, f"{where}.plan")}
            return k
        cls = type(o)
        if not cls.__module__.startswith(CLASS_PREFIXES) and cls.__module__ != "torch":
            raise SaveError(f"{where}: is a {cls.__module__}.{cls.__qualname__}; a BrainSlug "
                            f"file stores PyTorch's modules and BrainSlug's own only")
        state = o.__getstate__()
        if not isinstance(state, dict):
            raise SaveError(f"{where}: a {cls.__qualname__} whose state is not a dict")
        state = {n: v for n, v in state.items() if n not in _SKIPPED.get(cls, ())}
        if isinstance(o, torch.nn.Module):
            hooks = [n for n, v in state.items() if "hooks" in n and v]
            if hooks:
                raise SaveError(f"{where}: has {', '.join(hooks)}; a saved plan would run "
                                f"without them (remove the hooks before saving)")
            # (what nn.Module.__init__ makes again on load)
            state = {n: v for n, v in state.items() if n not in _MODULE_DEFAULTS or v}
        self.objects[k] = {"class": _qualified(cls),
                           "state": {n: self.value(v, f"{where}.{n}") for n, v in state.items()}}
        return k

    def graph(self, gm: fx.GraphModule, where: str) -> dict[str, Any]:
        nodes = []
        # every submodule, called or not (a packed convolution's folded source
        # is called through its wrapper), and what get_attr nodes read
        attrs: dict[str, Any] = {name: self.value(child, f"{where}.{name}")
                                 for name, child in gm.named_children()}
        for n in gm.graph.nodes:
            target: Any = n.target
            if n.op == "call_function":
                target = {"$fn": _function_name(n.target, f"{where}: node {n.name}")}
            elif n.op == "get_attr" and n.target.split(".")[0] not in attrs:
                attrs[n.target] = self.value(attr_at(gm, n.target), f"{where}.{n.target}")
            nodes.append({"name": n.name, "op": n.op, "target": target,
                          "args": self.value(n.args, f"{where}: node {n.name}"),
                          "kwargs": self.value(n.kwargs, f"{where}: node {n.name}")})
        codegen = gm.graph._codegen
        pytree = None
        if type(codegen) is not fx.graph.CodeGen:
            info = getattr(codegen, "pytree_info", None)
            if info is None:
                raise SaveError(f"{where}: its graph has a {type(codegen).__name__} code "
                                f"generator, which a file can't store")
            from torch.utils._pytree import treespec_dumps

            pytree = {"orig_args": list(info.orig_args),
                      "in_spec": treespec_dumps(info.in_spec) if info.in_spec else None,
                      "out_spec": treespec_dumps(info.out_spec) if info.out_spec else None}
        return {"class_name": type(gm).__name__, "nodes": nodes, "attrs": attrs,
                "pytree": pytree}



def _set_path(root: torch.nn.Module, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        if not hasattr(root, part):
            root.add_module(part, torch.nn.Module())
        root = getattr(root, part)
    if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
        root.register_buffer(last, value)
    else:
        setattr(root, last, value)


class _Decoder:
    """The inverse of `_Encoder`."""

    def __init__(self, manifest: dict[str, Any], tensors: list[torch.Tensor],
                 external: Callable[[str], torch.Tensor] | None, where: str):
        self.objects_json = manifest["objects"]
        self.tensors = tensors
        self.external = external
        self.where = where
        self.objects: dict[int, Any] = {}

    def value(self, v: Any, nodes: dict[str, fx.Node] | None = None) -> Any:
        if isinstance(v, list):
            return [self.value(x, nodes) for x in v]
        if not isinstance(v, dict):
            return v
        (kind, x), = v.items()
        if kind == "$tensor":
            return self.tensors[x]
        if kind == "$external":
            if self.external is None:
                raise ValueError(f"{self.where}: refers to a tensor of a model it does not hold")
            return self.external(x)
        if kind == "$obj":
            return self.obj(x)
        if kind == "$node":
            return nodes[x]  # type: ignore[index]
        if kind == "$tuple":
            return tuple(self.value(y, nodes) for y in x)
        if kind in ("$dict", "$odict"):
            d = {self.value(k, nodes): self.value(y, nodes) for k, y in x}
            return collections.OrderedDict(d) if kind == "$odict" else d
        if kind in ("$set", "$frozenset"):
            s = {self.value(y, nodes) for y in x}
            return frozenset(s) if kind == "$frozenset" else s
        if kind == "$float":
            return float(x)
        if kind == "$size":
            return torch.Size(x)
        if kind in ("$dtype", "$memory_format", "$layout"):
            return getattr(torch, x)
        if kind == "$device":
            return torch.device(x)
        if kind == "$slice":
            return slice(*(self.value(y, nodes) for y in x))
        if kind == "$ellipsis":
            return Ellipsis
        if kind == "$fn":
            return _resolve(x)
        raise ValueError(f"{self.where}: unknown value kind {kind!r}")

    def obj(self, k: int) -> Any:
        if k in self.objects:
            return self.objects[k]
        d = self.objects_json[k]
        if "graph" in d:
            o = self.objects[k] = self.graph(d["graph"])
            return o
        if "arena" in d:
            o = self.objects[k] = Arena(self.value(d["arena"]), allocate_f32)
            return o
        path = d["class"]
        if not path.startswith(CLASS_PREFIXES) and not path.startswith("torch:"):
            raise ValueError(f"{self.where}: names class {path}, which a BrainSlug file may "
                             f"not build (PyTorch's and BrainSlug's classes only)")
        cls = _resolve(path)
        if not isinstance(cls, type):
            raise ValueError(f"{self.where}: {path} is not a class")
        o = self.objects[k] = cls.__new__(cls)
        if isinstance(o, torch.nn.Module):
            torch.nn.Module.__init__(o)
        state = {n: self.value(v) for n, v in d["state"].items()}
        if hasattr(o, "__setstate__"):
            o.__setstate__(state)
        else:
            o.__dict__.update(state)
        return o

    def graph(self, d: dict[str, Any]) -> fx.GraphModule:
        root = torch.nn.Module()
        for path, v in d["attrs"].items():
            _set_path(root, path, self.value(v))
        graph = fx.Graph()
        nodes: dict[str, fx.Node] = {}
        for n in d["nodes"]:
            target = self.value(n["target"]) if n["op"] == "call_function" else n["target"]
            node = graph.create_node(n["op"], target, self.value(n["args"], nodes),
                                     self.value(n["kwargs"], nodes), name=n["name"])
            nodes[n["name"]] = node
        if d["pytree"] is not None:
            from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo
            from torch.utils._pytree import treespec_loads

            p = d["pytree"]
            graph._codegen = _PyTreeCodeGen(_PyTreeInfo(
                p["orig_args"], p["in_spec"] and treespec_loads(p["in_spec"]),
                p["out_spec"] and treespec_loads(p["out_spec"])))
        graph.lint()
        gm = fx.GraphModule(root, graph, class_name=d["class_name"])
        for name, child in root.named_children():  # (fx copies only what nodes call)
            gm.add_module(name, child)
        return gm


# ------------------------------------------------------------------------ the file

def encode(plan: fx.GraphModule, original: torch.nn.Module, info: PlanInfo,
           input_shape: list[int], options: dict[str, Any], kernels: PlanKernels,
           external: dict[int, str] | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the sections of a plan's file. With `external` (tensor
    id -> its name in `original`), those tensors are stored as references and
    the original's state_dict is left out (pickling, where the model goes beside)."""
    enc = _Encoder(external)
    plan_json = enc.value(plan, "plan")
    state = {} if external is not None else {
        k: enc.tensor(t, k) for k, t in original.state_dict(keep_vars=True).items()}
    kernels_json, sections = kernel_sections(kernels)
    manifest = {
        "kind": KIND, "version": VERSION, "torch": torch.__version__,
        "model": getattr(original, "model_name", None) or type(original).__name__,
        "input_shape": list(input_shape),
        "options": dict(options),
        "plan": plan_json,
        "state_dict": state,
        "info": enc.value(info, "info"),
        "objects": enc.objects,
        "tensors": [{"parameter": isinstance(t, torch.nn.Parameter),
                     "requires_grad": t.requires_grad, "channels_last": _channels_last(t)}
                    for t in enc.tensors],
        "kernels": kernels_json,
    }
    sections["tensors"] = bundle.encode_tensors(
        {f"t{i}": _tensor_bytes(t) for i, t in enumerate(enc.tensors)},
        {"format": "brainslug plan tensors"})
    return manifest, sections


def _tensor_bytes(t: torch.Tensor) -> tuple[str, tuple[int, ...], bytes]:
    flat = t.detach().contiguous().reshape(-1)
    return DTYPES[t.dtype], tuple(t.shape), flat.view(torch.uint8).numpy().tobytes()


def _channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(
        memory_format=torch.channels_last)


def _decode_tensors(b: bundle.Bundle, meta: list[dict[str, Any]]) -> list[torch.Tensor]:
    raw = bundle.decode_tensors(b.section("tensors"))
    out = []
    for i, m in enumerate(meta):
        dtype, shape, data = raw[f"t{i}"]
        t = torch.empty(shape, dtype=TORCH_DTYPES[dtype])
        if data.nbytes:
            t.reshape(-1).view(torch.uint8).numpy()[:] = np.frombuffer(data, np.uint8)
        if m["channels_last"]:
            t = t.contiguous(memory_format=torch.channels_last)
        if m["parameter"]:
            t = torch.nn.Parameter(t, requires_grad=m["requires_grad"])
        out.append(t)
    return out


class LoadedWeights(torch.nn.Module):
    """The original model's tensors under its state_dict keys, in a loaded
    module: its state_dict and load_state_dict are the model's. It holds no
    model code, so it can't run in training mode."""

    def __init__(self, model_name: str):
        super().__init__()
        self.model_name = model_name  # the class of the model that was saved

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("a module from brainslug.load runs inference only (call .eval()): "
                         "the file holds the optimized plan, not the model's code; to train, "
                         "use the model itself")


@dataclass
class Decoded:
    """A plan read from a file: what `BrainSlugModule` is made of."""

    original: torch.nn.Module
    plan: fx.GraphModule
    input_shape: list[int]
    info: PlanInfo
    kernels: PlanKernels
    options: dict[str, Any]


def decode(b: bundle.Bundle, original: torch.nn.Module | None,
           threads: Callable[[Any], int | None]) -> Decoded:
    """The plan of file `b`: its tensors refer to `original`'s where it was
    pickled beside it, else the file's own (held by a `LoadedWeights`).
    `threads(option)` is the kernel threads for optimize()'s `threads` option."""
    m = b.expect(KIND, VERSION, "a PyTorch one (brainslug.tensorflow.load reads TensorFlow "
                                "plans)")
    try:
        tensors = _decode_tensors(b, m["tensors"])
    except (KeyError, ValueError, TypeError) as e:
        raise bundle.BundleError(f"{b.path}: damaged tensors ({e})") from None
    external = None
    if original is not None:
        named = dict(original.named_parameters(remove_duplicate=False))
        named.update(original.named_buffers(remove_duplicate=False))
        external = named.__getitem__
    dec = _Decoder(m, tensors, external, b.path)
    plan = dec.value(m["plan"])
    if original is None:
        original = LoadedWeights(str(m.get("model", "model")))
        for key, v in m["state_dict"].items():
            _set_path(original, key, dec.value(v))
        original.eval()
    options = dict(m["options"])
    pk = load_kernels(m["kernels"], b, threads(options.get("threads", "auto")))
    runners = pk.runners()
    for name, mod in plan.named_modules():
        if isinstance(mod, StackKernel):
            if mod.stack_name not in runners:
                raise ValueError(f"{b.path}: no kernel for stack {mod.stack_name} ({name})")
            mod.runner, mod._checked, mod._dims = runners[mod.stack_name], {}, {}
            mod.__dict__.setdefault("_replaced_badly", "")  # (a file from before it)
    return Decoded(original, plan, list(m["input_shape"]), dec.value(m["info"]), pk, options)


def external_names(original: torch.nn.Module) -> dict[int, str]:
    """Tensor id -> a name of it in `original` (what `decode` resolves)."""
    named = dict(original.named_parameters(remove_duplicate=False))
    named.update(original.named_buffers(remove_duplicate=False))
    return {id(t): name for name, t in reversed(list(named.items()))}
