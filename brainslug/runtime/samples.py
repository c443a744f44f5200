"""`Samples`: 32-bit words at fixed addresses, compared with remembered
values in one native call.

The weight watch samples every packed weight on every call of a plan. Done
per weight in Python that cost 5-9 µs a weight after a large run had evicted
the weights and the interpreter's objects from cache (0.3 ms a call of
resnet50 at batch 1); one native pass over all the samples overlaps the
misses and costs a few microseconds.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence

import numpy as np

_IR = r"""
define i64 @bs_first_changed(ptr %addrs, ptr %saved, i64 %n) {
entry:
  %empty = icmp sle i64 %n, 0
  br i1 %empty, label %same, label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %cont]
  %ap = getelementptr i64, ptr %addrs, i64 %i
  %a = load i64, ptr %ap
  %p = inttoptr i64 %a to ptr
  %v = load i32, ptr %p
  %sp = getelementptr i32, ptr %saved, i64 %i
  %s = load i32, ptr %sp
  %ne = icmp ne i32 %v, %s
  br i1 %ne, label %found, label %cont
cont:
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, %n
  br i1 %more, label %loop, label %same
found:
  ret i64 %i
same:
  ret i64 -1
}
"""

_FirstChanged = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_first_changed: _FirstChanged | None = None
_engine = None
_lock = threading.Lock()


def _native() -> _FirstChanged:
    """`bs_first_changed(addrs, saved, n)`: the first i with `*(u32*)addrs[i]
    != saved[i]`, else -1 (compiled once per process)."""
    global _first_changed, _engine
    with _lock:
        if _first_changed is None:
            import llvmlite.binding as llvm

            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            mod = llvm.parse_assembly(_IR)
            mod.verify()
            tm = llvm.Target.from_default_triple().create_target_machine(opt=2, jit=True)
            _engine = llvm.create_mcjit_compiler(mod, tm)
            _engine.finalize_object()
            _first_changed = _FirstChanged(_engine.get_function_address("bs_first_changed"))
        return _first_changed


class Samples:
    """The 32-bit words of `views` at `picks` (per view: a slice of a 1-d
    view, or a tuple of index arrays, one per dim), and their values now.
    `changed()` says whether any of them differs since. The views' memory
    must stay alive and in place while the samples are checked (the caller
    checks the tensors' `data_ptr()` first)."""

    def __init__(self, views: Sequence[np.ndarray], picks: Sequence[object]):
        addrs: list[np.ndarray] = []
        saved: list[np.ndarray] = []
        for view, pick in zip(views, picks, strict=True):
            if view.dtype.itemsize != 4:
                raise ValueError(f"samples are 32-bit words, got {view.dtype}")
            if isinstance(pick, slice):
                offsets = np.arange(*pick.indices(view.shape[0]), dtype=np.int64) \
                    * view.strides[0]
            else:
                offsets = sum((np.asarray(i, np.int64) * s
                               for i, s in zip(pick, view.strides, strict=True)),
                              np.zeros(1, np.int64))
            addrs.append(view.ctypes.data + offsets)
            saved.append(np.ascontiguousarray(view[pick]).view(np.uint32).ravel())
        self._views = list(views)  # (their memory stays alive)
        self.addrs = np.ascontiguousarray(np.concatenate(addrs) if addrs
                                          else np.zeros(0, np.int64), np.int64)
        self.saved = np.ascontiguousarray(np.concatenate(saved) if saved
                                          else np.zeros(0, np.uint32), np.uint32)
        self._args = (self.addrs.ctypes.data, self.saved.ctypes.data, len(self.addrs))
        self._fn = _native()

    def changed(self) -> bool:
        return self._fn(*self._args) >= 0
