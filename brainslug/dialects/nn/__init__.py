"""The `nn` dialect: one op per network layer, on value-semantic tensors.

Every op takes and returns ranked builtin `tensor`s of `f32`. Extents may be
dynamic (`?`, stored as xDSL's `DYNAMIC_INDEX`); in practice only the batch
extent is. Shape inference propagates `?`: a dynamic input extent gives a
dynamic output extent on that axis.

Property encodings (all written inside the attr-dict), each declared by a
`PropertyConstraint` on its `prop_def` (see `properties`):

* integer lists: `DenseArrayBase` of i64, e.g. `strides = array<i64: 1, 1>`;
* integers: `IntegerAttr` i64, e.g. `groups = 1 : i64`;
* floats: `FloatAttr` f64, e.g. `eps = 1.000000e-05 : f64`;
* booleans: `BoolAttr` (an `IntegerAttr` of i1), written `true` / `false`;
* strings: `StringAttr`, e.g. `layout = "NCHW"`; those with a fixed set of
  values (`Layout`, `Impl`, `GeluApproximation`) are checked against it.

All properties are required and always printed, so that IR built in Python and
IR parsed from text compare equal; the only optional ones are `nn.clamp`'s
`min`/`max`, `nn.avg_pool2d`'s `divisor_override` (absent means "none") and
`nn.sigmoid`/`nn.silu`/`nn.mean`'s `impl` (absent means the exact formula or
the sum in order). Builders take Python values, with PyTorch's defaults.

Layout: ops whose meaning depends on the channel axis carry `layout`, which is
"NCHW" (channel axis 1, spatial axes 2, 3) or "NHWC" (channel axis 3, spatial
axes 1, 2). A rank-2 input to batch_norm (`[N, C]`) has its channels on axis 1
whatever the layout.

Every op except `nn.stack`, `nn.yield` and `nn.library` has a classmethod
`infer_type`, which takes the operand types and the properties as Python
values and returns the result type (or raises `VerifyException`), and a
builder `__init__` that infers the result type when none is given. `verify_`
checks the declared result type against `infer_type`.

Modules: `properties` (enums and property constraints), `base` (traits, layout
axes, shape helpers), `conv`, `batch_norm`, `elementwise`, `pooling`, `shape`
(cat, flatten, reshape, mean, softmax) and `stack` (stack, yield, library).
"""

from xdsl.ir import Dialect

from brainslug.dialects.nn.base import (
    DYN,
    Elementwise,
    MemoryBound,
    Removable,
    broadcast_shapes,
    channel_axis,
    is_elementwise,
    is_optimizable,
    is_removable,
    make_tensor,
    spatial_axes,
)
from brainslug.dialects.nn.batch_norm import BatchNormOp
from brainslug.dialects.nn.conv import Conv2dOp, LinearOp
from brainslug.dialects.nn.elementwise import (
    POW_EXPONENTS,
    AddcmulOp,
    AddOp,
    ClampOp,
    DivOp,
    DropoutOp,
    GeluOp,
    HardsigmoidOp,
    HardswishOp,
    IdentityOp,
    LeakyReluOp,
    MulOp,
    PowOp,
    ReluOp,
    SigmoidOp,
    SiluOp,
    SubOp,
    TanhOp,
)
from brainslug.dialects.nn.index_map import (
    ResizeBilinearOp,
    ResizeNearestOp,
    RollOp,
    linear_pieces,
)
from brainslug.dialects.nn.norm import GroupNormOp, L2NormalizeOp, LayerNormOp
from brainslug.dialects.nn.pooling import AdaptiveAvgPool2dOp, AvgPool2dOp, MaxPool2dOp
from brainslug.dialects.nn.properties import GeluApproximation, Impl, Layout
from brainslug.dialects.nn.shape import (
    CatOp,
    FlattenOp,
    MeanOp,
    PadOp,
    PermuteOp,
    ReshapeOp,
    SoftmaxOp,
    SumOp,
)
from brainslug.dialects.nn.stack import OPERAND_OF_NEXT, LibraryOp, StackOp, YieldOp

NN = Dialect(
    "nn",
    [
        Conv2dOp,
        LinearOp,
        BatchNormOp,
        GroupNormOp,
        LayerNormOp,
        L2NormalizeOp,
        ReluOp,
        SigmoidOp,
        TanhOp,
        SiluOp,
        HardswishOp,
        HardsigmoidOp,
        GeluOp,
        ClampOp,
        LeakyReluOp,
        DropoutOp,
        IdentityOp,
        AddOp,
        MulOp,
        SubOp,
        AddcmulOp,
        DivOp,
        PowOp,
        MaxPool2dOp,
        AvgPool2dOp,
        AdaptiveAvgPool2dOp,
        CatOp,
        FlattenOp,
        ReshapeOp,
        PadOp,
        PermuteOp,
        RollOp,
        ResizeNearestOp,
        ResizeBilinearOp,
        MeanOp,
        SumOp,
        SoftmaxOp,
        LibraryOp,
        StackOp,
        YieldOp,
    ],
    [],
)

__all__ = [
    "DYN",
    "NN",
    "OPERAND_OF_NEXT",
    "POW_EXPONENTS",
    "AdaptiveAvgPool2dOp",
    "AddOp",
    "AvgPool2dOp",
    "BatchNormOp",
    "CatOp",
    "ClampOp",
    "Conv2dOp",
    "DropoutOp",
    "Elementwise",
    "FlattenOp",
    "GeluApproximation",
    "GeluOp",
    "HardsigmoidOp",
    "HardswishOp",
    "IdentityOp",
    "Impl",
    "GroupNormOp",
    "L2NormalizeOp",
    "LayerNormOp",
    "Layout",
    "LeakyReluOp",
    "LibraryOp",
    "LinearOp",
    "MaxPool2dOp",
    "MeanOp",
    "SumOp",
    "MemoryBound",
    "MulOp",
    "SubOp",
    "AddcmulOp",
    "DivOp",
    "PadOp",
    "PermuteOp",
    "PowOp",
    "ResizeBilinearOp",
    "linear_pieces",
    "ResizeNearestOp",
    "RollOp",
    "Removable",
    "ReluOp",
    "ReshapeOp",
    "SigmoidOp",
    "SiluOp",
    "SoftmaxOp",
    "StackOp",
    "TanhOp",
    "YieldOp",
    "broadcast_shapes",
    "channel_axis",
    "is_elementwise",
    "is_optimizable",
    "is_removable",
    "make_tensor",
    "spatial_axes",
]
