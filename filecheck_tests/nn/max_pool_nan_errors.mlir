// RUN: bs-opt %s --split-input-file --verify-diagnostics | filecheck %s

// nn.max_pool2d `nan`: absent, "propagate" or "skip" (see max_pool_nan.mlir).

func.func @f(%x: tensor<?x13x13x37xf32>) {
  %0 = nn.max_pool2d %x {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC", nan = "ignore"} : tensor<?x13x13x37xf32> -> tensor<?x6x6x37xf32>
  func.return
}

// CHECK: nn.max_pool2d: nan must be one of ['propagate', 'skip'] (or absent), got 'ignore'

// -----

// The enum's spelling is case-sensitive.
func.func @f(%x: tensor<?x13x13x37xf32>) {
  %0 = nn.max_pool2d %x {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC", nan = "SKIP"} : tensor<?x13x13x37xf32> -> tensor<?x6x6x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.max_pool2d: nan must be one of ['propagate', 'skip'] (or absent), got 'SKIP'

// -----

func.func @f(%x: tensor<?x13x13x37xf32>) {
  %0 = nn.max_pool2d %x {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC", nan = true} : tensor<?x13x13x37xf32> -> tensor<?x6x6x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: true should be of base attribute string

// -----

// The other checks still run with a valid `nan`.
func.func @f(%x: tensor<?x13x13x37xf32>) {
  %0 = nn.max_pool2d %x {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC", nan = "skip"} : tensor<?x13x13x37xf32> -> tensor<?x7x7x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.max_pool2d: result type tensor<?x7x7x37xf32> does not match inferred type tensor<?x6x6x37xf32>
