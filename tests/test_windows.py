"""`analysis.windows`: which padded windows can lie inside their image."""

from __future__ import annotations

import pytest

from brainslug.analysis.ranges import inside_dims
from brainslug.analysis.windows import linear_in, never_inside
from brainslug.dialects import loop, simd
from brainslug.ir.context import parse_module


def _row_of_blocks(blocks: int, p: int, stride: int = 1) -> str:
    """A depthwise 3x3 (padding 1) over a channels-last image `blocks * p`
    columns wide, in blocks of `p` columns, as bs-register-tile leaves it."""
    width = blocks * p
    cols = "\n".join(f"      %k{j} = arith.constant {j} : index\n"
                     f"      %col{j} = arith.addi %base, %k{j} : index" for j in range(p))
    loads = "\n".join(
        f"          %x{j} = simd.load %x[%n, %c, %h, %col{j}, %kh, %kw] map affine_map<(d0, d1, "
        f"d2, d3, d4, d5) -> (d0, d2 * {stride} + d4 - 1, d3 * {stride} + d5 - 1, d1)> pad 0.0 : "
        f"f32 : memref<?x{width * stride}x{width * stride}x21xf32>" for j in range(p))
    yields = ", ".join(f"%x{j}" for j in range(p))
    types = ", ".join(["!simd.vec<f32>"] * p)
    return f"""
func.func @dw(%x: memref<?x{width * stride}x{width * stride}x21xf32>) attributes {{bs.kernel}} {{
  %c0 = arith.constant 0 : index
  %n0 = memref.dim %x, %c0 : memref<?x{width * stride}x{width * stride}x21xf32>
  loop.nest parallel 3 (%n, %h, %wb) = (0, 0, 0) to (%n0, {width}, {blocks}) {{
    %p = arith.constant {p} : index
    %base = arith.muli %wb, %p : index
{cols}
    simd.loop (%c) = (0) to (21) {{
      %r:{p} = loop.reduce add (%kh, %kw) = (0, 0) to (3, 3) init 0.0 : f32 -> {types} {{
{loads}
        loop.yield {yields} : {types}
      }}
    }}
  }}
  func.return
}}
"""


def _window(text: str) -> tuple[loop.ReduceOp, list[tuple[simd.LoadOp, list[int]]]]:
    module = parse_module(text)
    red = next(op for op in module.walk() if isinstance(op, loop.ReduceOp))
    loads = [(op, [k for k, inside in enumerate(inside_dims(op)) if not inside])
             for op in red.body.walk() if isinstance(op, simd.LoadOp)]
    return red, loads


@pytest.mark.parametrize(("blocks", "p", "stride", "never"), [
    (1, 7, 1, True),    # one block: it meets both borders
    (2, 7, 1, True),    # two: the first meets the left border, the second the right
    (3, 7, 1, False),   # the middle block's window is inside
    (1, 5, 2, True),
    (2, 5, 2, False),   # stride 2 over 20 columns: the last window ends at 19
])
def test_rows_of_few_blocks_are_never_inside(blocks: int, p: int, stride: int,
                                             never: bool) -> None:
    red, loads = _window(_row_of_blocks(blocks, p, stride))
    assert len(loads) == p and all(checked for _, checked in loads)
    assert never_inside(red, loads) is never


def test_window_indices_must_be_linear_in_the_taps() -> None:
    from xdsl.ir.affine import AffineBinaryOpExpr, AffineBinaryOpKind, AffineDimExpr

    d0, d1 = AffineDimExpr(0), AffineDimExpr(1)
    assert linear_in(d0 * 2 + d1 - 1, {1})
    assert linear_in((d0 + 3) * 4 + d1, {0, 1})
    assert not linear_in(AffineBinaryOpExpr(AffineBinaryOpKind.Mul, d1, d1), {1})
    assert not linear_in((d0 + d1) // 2, {1})
    assert linear_in((d0 // 2) + d1, {1})  # no tap inside the division
