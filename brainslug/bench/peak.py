"""The machine's measured peak float32 FMA rate, for GFLOP/s as a fraction of peak.

A tiny LLVM function `void peak(i64 iters, float* out)` runs `CHAINS`
independent `<lanes x float>` `llvm.fma` chains (16 lanes with AVX-512, else 8:
the backend's lane width for the host) for `iters` iterations and stores the
accumulators to `out`, so nothing is dead. It is compiled for the host with
the x86 backend's TargetMachine and function attributes (so 16 lanes stay in
zmm registers) and called through ctypes, which releases the GIL, from
`threads` Python threads at once.

`cpu_clock`/`others_cpu` say how much of the machine other processes used
meanwhile (from /proc/stat), so that a number taken on a busy machine shows.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import time
from typing import Any

import llvmlite.binding as llvm
from llvmlite import ir

CHAINS = 16
"""Independent FMA chains: enough to cover the FMA latency on two pipes."""

_Fn = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)


def _module(lanes: int, attrs: dict[str, str]) -> str:
    """The LLVM IR of `peak` with `CHAINS` chains of `lanes`-wide FMAs."""
    from brainslug.lowering.backends.x86 import _Attributes

    f32, i64 = ir.FloatType(), ir.IntType(64)
    vt = ir.VectorType(f32, lanes)
    mod = ir.Module("bs_peak")
    mod.triple = llvm.get_default_triple()
    fma = ir.Function(mod, ir.FunctionType(vt, [vt, vt, vt]), f"llvm.fma.v{lanes}f32")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [i64, ir.PointerType()]), "peak")
    fn.attributes = _Attributes(attrs, {"noinline"})  # target-cpu, features, zmm width
    iters, out = fn.args
    entry, body, done = (fn.append_basic_block(n) for n in ("entry", "body", "done"))
    b = ir.IRBuilder(entry)
    # mul < 1 and add > 0: the chains converge to add/(1-mul), never overflow or denormal,
    # and no constant folds an fma away
    mul, add = ir.Constant(vt, [0.999] * lanes), ir.Constant(vt, [1e-3] * lanes)
    n = b.select(b.icmp_signed("<", iters, ir.Constant(i64, 1)), ir.Constant(i64, 1), iters)
    b.branch(body)
    b = ir.IRBuilder(body)
    i = b.phi(i64, "i")
    accs = [b.phi(vt, f"a{c}") for c in range(CHAINS)]
    nxt = [b.call(fma, [a, mul, add]) for a in accs]
    i1 = b.add(i, ir.Constant(i64, 1))
    b.cbranch(b.icmp_signed("<", i1, n), body, done)
    i.add_incoming(ir.Constant(i64, 0), entry)
    i.add_incoming(i1, body)
    for c, (a, x) in enumerate(zip(accs, nxt, strict=True)):
        a.add_incoming(ir.Constant(vt, [float(c)] * lanes), entry)
        a.add_incoming(x, body)
    b = ir.IRBuilder(done)
    for c, x in enumerate(nxt):
        b.store(x, b.gep(out, [ir.Constant(i64, c * lanes)], source_etype=f32), align=4)
    b.ret_void()
    return str(mod)


@functools.cache
def _compiled() -> tuple[Any, int, Any]:
    """(the ctypes function, its lane width, the engine that owns it)."""
    from brainslug.lowering.backends.x86 import X86Backend

    backend = X86Backend("host")
    lanes = 16 if backend.lanes >= 16 else 8
    text = _module(lanes, backend.func_attributes())
    tm = backend.target_machine(jit=True)
    mod = llvm.parse_assembly(text)
    mod.verify()
    engine = llvm.create_mcjit_compiler(mod, tm)  # owns tm
    engine.finalize_object()
    return _Fn(engine.get_function_address("peak")), lanes, engine


def lanes() -> int:
    """The vector width (float32 lanes) the microbenchmark uses."""
    return _compiled()[1]


def _run(iters: int, threads: int) -> float:
    """Seconds for `threads` threads to each run `iters` iterations at once."""
    fn = _compiled()[0]
    bufs = [(ctypes.c_float * (CHAINS * 16))() for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def work(buf: Any) -> None:
        start.wait()
        fn(iters, ctypes.addressof(buf))

    ts = [threading.Thread(target=work, args=(buf,)) for buf in bufs]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def peak_gflops(threads: int, seconds: float = 0.03, runs: int = 15) -> float:
    """Measured peak float32 FMA rate of `threads` threads, GFLOP/s (an FMA is
    2 flops): the best of `runs` runs of about `seconds` each. Short runs and
    many of them, since a peak is a best case: on a shared machine a long run
    rarely finds every core free."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    width = lanes()
    iters = 100_000
    t = min(_run(iters, 1) for _ in range(3))  # calibrate on one thread
    iters = max(10_000, int(iters * seconds / max(t, 1e-6)))
    best = min(_run(iters, threads) for _ in range(runs))
    return 2 * width * CHAINS * iters * threads / best / 1e9


def cpu_clock() -> tuple[float, float, float] | None:
    """(wall, CPU seconds of all processes, of this one), or None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait (steal counts)
    t = os.times()
    return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), t.user + t.system


def others_cpu(start: tuple[float, float, float] | None) -> float | None:
    """The fraction of the machine's CPUs that other processes (or the hypervisor)
    used since `start` (a `cpu_clock()`)."""
    end = cpu_clock()
    if start is None or end is None or end[0] <= start[0]:
        return None
    others = (end[1] - start[1]) - (end[2] - start[2])
    return max(0.0, others / ((end[0] - start[0]) * (os.cpu_count() or 1)))
