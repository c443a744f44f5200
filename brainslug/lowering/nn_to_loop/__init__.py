"""bs-lower-nn-to-loop: the layers of each `nn.stack` become a kernel of `loop` nests.

Each layer becomes one or more `loop.nest`s writing a buffer: a kernel output
argument when the layer's result leaves the stack, else a `memref.alloc`.
4-D layers with a layout iterate in logical (N, C, H, W) order and reach memory
through the layout's affine map, so NHWC needs no transposes (bs-reorder then
moves C innermost). Every elementwise formula repeats the framework's own
operations in the framework's order (see DESIGN.md, "Exactness").

- `lower_nn_to_loop`: the pass;
- `stack`: a stack's kernel, each layer lowered through the `LOWERINGS` table;
- `builder`: the kernel, nest and scalar-op builders;
- `elementwise`, `batch_norm`, `pooling`, `reductions`, `data_movement`,
  `conv_linear`: the lowerings of each family of layers;
- `eigen`: TensorFlow's numerics (`impl = "eigen"`).
"""

from brainslug.lowering.nn_to_loop.builder import UnsupportedLayer
from brainslug.lowering.nn_to_loop.lower_nn_to_loop import LowerNNToLoopPass
from brainslug.lowering.nn_to_loop.stack import LOWERINGS, lower_stack

__all__ = ["LOWERINGS", "LowerNNToLoopPass", "UnsupportedLayer", "lower_stack"]
