"""The `simd` dialect: a generic SIMD processor with W lanes.

W is not part of the IR: it is a target parameter bound by the backend
(16 or 8 lanes of AVX-512/AVX2 on x86, the threads of a block on CUDA).
`simd.loop` runs its body over a range in chunks of W lanes; the last chunk is
masked. Inside it, `!simd.vec<T>` values hold one element per lane, and every
memory access of lane l sees the loop's induction variable as `iv + l`.
Uniform (lane-invariant) values stay scalar and are broadcast by `simd.splat`.

Modules: `base` (the vector type, the lane loops, loads, stores, bounds checks,
`simd.splat`, `simd.iota`) and `arith` (lane-wise operations).
"""

from xdsl.ir import Dialect

from brainslug.dialects.simd.arith import (
    BINARY_FLOAT,
    BINARY_INT,
    AddfOp,
    AddiOp,
    AndiOp,
    CmpfOp,
    CmpfPredicate,
    CmpiOp,
    CmpiPredicate,
    DivfOp,
    DivsiOp,
    FloordivsiOp,
    FmaOp,
    MathFunction,
    MathOp,
    MaxsiOp,
    MinsiOp,
    MulfOp,
    MuliOp,
    NegfOp,
    OriOp,
    ReduceOp,
    RemsiOp,
    SelectOp,
    SIToFPOp,
    SubfOp,
    SubiOp,
)
from brainslug.dialects.simd.base import (
    LANE_LOOPS,
    InBoundsOp,
    IotaOp,
    LoadOp,
    LoopOp,
    PrefetchOp,
    ReduceLoopOp,
    SplatOp,
    StoreOp,
    VecType,
    enclosing_loop,
    lane_type,
    vec,
)

SIMD = Dialect(
    "simd",
    [
        LoopOp,
        ReduceLoopOp,
        LoadOp,
        StoreOp,
        PrefetchOp,
        InBoundsOp,
        SplatOp,
        IotaOp,
        NegfOp,
        FmaOp,
        MathOp,
        CmpfOp,
        CmpiOp,
        SelectOp,
        SIToFPOp,
        ReduceOp,
        *BINARY_FLOAT.values(),
        *BINARY_INT.values(),
    ],
    [VecType],
)

__all__ = [
    "AddfOp",
    "AddiOp",
    "AndiOp",
    "BINARY_FLOAT",
    "BINARY_INT",
    "CmpfOp",
    "CmpfPredicate",
    "CmpiOp",
    "CmpiPredicate",
    "DivfOp",
    "DivsiOp",
    "FloordivsiOp",
    "InBoundsOp",
    "IotaOp",
    "LANE_LOOPS",
    "LoadOp",
    "PrefetchOp",
    "LoopOp",
    "MathFunction",
    "FmaOp",
    "MathOp",
    "MaxsiOp",
    "MinsiOp",
    "MulfOp",
    "MuliOp",
    "NegfOp",
    "OriOp",
    "ReduceLoopOp",
    "ReduceOp",
    "RemsiOp",
    "SIMD",
    "SIToFPOp",
    "SelectOp",
    "SplatOp",
    "StoreOp",
    "SubfOp",
    "SubiOp",
    "VecType",
    "enclosing_loop",
    "lane_type",
    "vec",
]
