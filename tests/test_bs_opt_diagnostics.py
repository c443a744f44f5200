"""bs-opt reports bad input as located diagnostics (`FILE:LINE:COL: error: ...`,
the source line and a caret under the op's name), never a Python traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from xdsl.dialects.builtin import TensorType, f32
from xdsl.utils.exceptions import VerifyException

import brainslug.dialects.nn as bsnn
import brainslug.dialects.nn.base as nn_base
from brainslug.tools.bs_opt import main

EXAMPLE = Path(__file__).parent.parent / "examples" / "ir" / "bn_relu_maxpool.mlir"

# examples/ir/bn_relu_maxpool.mlir without its comments: nn.batch_norm's name is
# at 3:9, nn.max_pool2d's at 5:8.
IR = """\
func.func @forward(%x: tensor<?x37x13x13xf32>, %gamma: tensor<37xf32>, %beta: tensor<37xf32>,
                   %mean: tensor<37xf32>, %var: tensor<37xf32>) -> tensor<?x37x7x7xf32> {
  %bn = nn.batch_norm %x weight %gamma bias %beta mean %mean var %var {eps = 1.000000e-05 : f64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
  %r = nn.relu %bn : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %p = nn.max_pool2d %r {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
  func.return %p : tensor<?x37x7x7xf32>
}
"""


def with_channels(text: str, c: int | str) -> str:
    return (text.replace("tensor<?x37x13x13xf32>", f"tensor<?x{c}x13x13xf32>")
            .replace("tensor<37xf32>", f"tensor<{c}xf32>")
            .replace("tensor<?x37x7x7xf32>", f"tensor<?x{c}x7x7xf32>"))


NEGATIVE_STRIDE = IR.replace("strides = array<i64: 2, 2>", "strides = array<i64: -2, 2>")


def bs_opt(capsys, path: Path, *args: str) -> tuple[int, str]:
    rc = main([str(path), *args])
    captured = capsys.readouterr()
    return rc, captured.err


def lines_of(err: str) -> list[str]:
    return err.rstrip("\n").split("\n")


def assert_no_traceback(err: str) -> None:
    assert "Traceback" not in err and 'File "' not in err, err


@pytest.mark.parametrize("text, line, col, op, message", [
    (with_channels(IR, 0), 3, 9, "nn.batch_norm",
     "input [?, 0, 13, 13] has extent 0 on axis 1: zero-size tensors are not supported"),
    (NEGATIVE_STRIDE, 5, 8, "nn.max_pool2d", "strides values must be >= 1, got [-2, 2]"),
], ids=["zero_channels", "negative_stride"])
def test_a_verifier_error_is_located_at_its_op(tmp_path, capsys, text: str, line: int,
                                               col: int, op: str, message: str) -> None:
    """Zero channels (was ZeroDivisionError in a pass) and a negative pooling
    stride: FILE:LINE:COL, the op and the problem, the source line and a caret
    under the op's name, with a pipeline or without one (the input is verified
    after parsing)."""
    path = tmp_path / "bad.mlir"
    path.write_text(text)
    rc, err = bs_opt(capsys, path, "-p", "default")
    assert rc == 1
    assert_no_traceback(err)
    assert "ZeroDivisionError" not in err
    first, source, caret = lines_of(err)[:3]
    assert first == f"{path}:{line}:{col}: error: {op}: {message}"
    assert source == text.splitlines()[line - 1]
    assert caret == " " * (col - 1) + "^" + "~" * (len(op) - 1)
    assert bs_opt(capsys, path)[1] == err


def test_an_extent_of_2_to_the_62_is_a_located_verifier_error(tmp_path, capsys) -> None:
    path = tmp_path / "big.mlir"
    path.write_text(with_channels(IR, 2**62))
    rc, err = bs_opt(capsys, path, "-p", "default")
    assert rc == 1
    assert_no_traceback(err)
    assert "out of range for type i64" not in err
    first = lines_of(err)[0]
    assert first.startswith(f"{path}:3:9: error: nn.batch_norm: input [?, {2**62}, 13, 13] "
                            "is too large: ")
    assert "more than an int64 holds" in first


def test_the_largest_tensor_that_fits_compiles(tmp_path, capsys) -> None:
    """2^61 - 1 f32 elements are 2^63 - 4 bytes: valid, and bs-opt lowers it."""
    extent = 2**61 - 1
    ty = f"tensor<?x{extent}xf32>"
    path = tmp_path / "edge.mlir"
    path.write_text(f"func.func @f(%x: {ty}) -> {ty} {{\n"
                    f"  %r = nn.relu %x : {ty} -> {ty}\n"
                    f"  func.return %r : {ty}\n}}\n")
    rc, err = bs_opt(capsys, path, "-p", "default")
    assert (rc, err) == (0, "")


def test_the_nn_verifiers_reject_zero_and_overflowing_extents() -> None:
    with pytest.raises(VerifyException, match=r"nn.relu: input \[\?, 0\] has extent 0 on axis 1"):
        bsnn.ReluOp.infer_type(TensorType(f32, [-1, 0]))
    with pytest.raises(VerifyException, match="nn.relu: input .* is too large"):
        bsnn.ReluOp.infer_type(TensorType(f32, [-1, 2**31, 2**30]))
    largest = bsnn.make_tensor([-1, 2**61 - 1])
    assert bsnn.ReluOp.infer_type(largest) == largest
    with pytest.raises(VerifyException, match=r"nn.add: rhs \[0\] has extent 0 on axis 0"):
        bsnn.AddOp.infer_type(TensorType(f32, [-1, 4]), TensorType(f32, [0]))


def test_a_pass_that_fails_is_an_internal_error_without_traceback(tmp_path, capsys,
                                                                     monkeypatch) -> None:
    """Without the zero-extent rule, bs-tile-depth-first divides by a tile's
    size of 0: bs-opt names the pass and the exception; --traceback adds the
    traceback."""
    monkeypatch.setattr(nn_base, "check_extents", lambda op_name, what, shape: tuple(shape))
    path = tmp_path / "zero.mlir"
    path.write_text(with_channels(IR, 0))
    rc, err = bs_opt(capsys, path, "-p", "default")
    assert rc == 1
    assert_no_traceback(err)
    assert lines_of(err)[0] == (f"{path}: error: internal error in pass bs-tile-depth-first: "
                                "ZeroDivisionError: integer division or modulo by zero")
    rc, err = bs_opt(capsys, path, "-p", "default", "--traceback")
    assert rc == 1 and "Traceback (most recent call last)" in err
    assert err.startswith(f"{path}: error: internal error in pass bs-tile-depth-first")


def test_an_error_while_parsing_an_op_is_located_at_it(tmp_path, capsys) -> None:
    """loop.tile's builder rejects a step out of i64's range."""
    path = tmp_path / "tile.mlir"
    path.write_text("func.func @f(%x: memref<8xf32>) {\n"
                    "  loop.tile (%i) = (0) to (8) step (99999999999999999999) {\n"
                    "  }\n"
                    "  func.return\n"
                    "}\n")
    rc, err = bs_opt(capsys, path)
    assert rc == 1
    assert_no_traceback(err)
    first, _, caret = lines_of(err)[:3]
    assert first.startswith(f"{path}:2:3: error: loop.tile: Integer value 99999999999999999999 "
                            "is out of range")
    assert caret == "  ^~~~~~~~~"


def test_split_input_file_locations_count_from_the_file(tmp_path, capsys) -> None:
    path = tmp_path / "split.mlir"
    path.write_text(IR + "// -----\n" + NEGATIVE_STRIDE)
    rc, err = bs_opt(capsys, path, "--split-input-file")
    assert rc == 1
    offset = IR.count("\n") + 1
    assert lines_of(err)[0].startswith(f"{path}:{5 + offset}:8: error: nn.max_pool2d: strides")


def test_an_explicit_loc_wins(tmp_path, capsys) -> None:
    path = tmp_path / "loc.mlir"
    path.write_text("func.func @f(%x: tensor<4xf32>) {\n"
                    '  %0 = nn.relu %x : tensor<4xf32> -> tensor<5xf32> loc("model.py":12:3)\n'
                    "  func.return\n"
                    "}\n")
    rc, err = bs_opt(capsys, path)
    assert rc == 1
    assert lines_of(err) == ["model.py:12:3: error: nn.relu: result type tensor<5xf32> does not "
                             "match inferred type tensor<4xf32>"]


def test_a_parse_error_is_located_mlir_style(tmp_path, capsys) -> None:
    path = tmp_path / "parse.mlir"
    path.write_text("func.func @f(%x: tensor<4xf32>) {\n"
                    "  %0 = nn.frobnicate %x : tensor<4xf32> -> tensor<4xf32>\n"
                    "  func.return\n"
                    "}\n")
    rc, err = bs_opt(capsys, path)
    assert rc == 1
    assert lines_of(err) == [
        f"{path}:2:22: error: Operation nn.frobnicate is not registered",
        "  %0 = nn.frobnicate %x : tensor<4xf32> -> tensor<4xf32>",
        " " * 21 + "^~",
    ]


@pytest.mark.parametrize("edit", [
    lambda t: with_channels(t, 0),
    lambda t: t.replace("strides = array<i64: 2, 2>", "strides = array<i64: -2, 2>"),
], ids=["zero-channels", "negative-stride"])
def test_the_bs_opt_command_on_the_example(tmp_path, edit) -> None:
    """The issue's commands: the example edited, through the `bs-opt` entry point."""
    path = tmp_path / "bad.mlir"
    path.write_text(edit(EXAMPLE.read_text()))
    r = subprocess.run([sys.executable, "-m", "brainslug.tools.bs_opt", str(path), "-p", "default"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1
    assert_no_traceback(r.stderr)
    assert "ZeroDivisionError" not in r.stderr
    first = r.stderr.splitlines()[0]
    # the op that failed, at its name in the file
    lines = path.read_text().splitlines()
    name = "nn.batch_norm" if "x0x" in path.read_text() else "nn.max_pool2d"
    line = next(i for i, text in enumerate(lines, 1) if f"= {name} " in text)
    col = lines[line - 1].index(name) + 1
    assert first.startswith(f"{path}:{line}:{col}: error: {name}: ")
