// RUN: not bs-opt %s -p default 2>&1 | filecheck %s

// A verifier error is reported at the op that fails, as mlir-opt reports it:
// FILE:LINE:COL of the op's name, the source line and a caret under the name.
// No Python traceback.

func.func @forward(%x: tensor<?x37x13x13xf32>) -> tensor<?x37x7x7xf32> {
  %r = nn.relu %x : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %p = nn.max_pool2d %r {kernel = array<i64: 3, 3>, strides = array<i64: -2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
  func.return %p : tensor<?x37x7x7xf32>
}

// CHECK-NOT: Traceback
// CHECK:      located_verifier_error.mlir:9:8: error: nn.max_pool2d: strides values must be >= 1, got [-2, 2]
// CHECK-NEXT: {{^}}  %p = nn.max_pool2d %r {kernel = array<i64: 3, 3>, strides = array<i64: -2, 2>,
// CHECK-NEXT: {{^ {7}\^~{12}$}}
// CHECK-NOT: Traceback
