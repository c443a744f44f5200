// RUN: bs-opt %s | filecheck %s
// RUN: bs-opt %s | bs-opt - | filecheck %s
// RUN: bs-opt %s --print-op-generic | bs-opt - | filecheck %s

// nn.max_pool2d's `nan`: absent (PyTorch's "propagate"), "propagate" spelled
// out, or "skip" (TensorFlow's MaxPool); each prints as it was written (see
// max_pool_nan_errors.mlir for bad values, lower_max_pool_nan.mlir for the loops).

func.func @pools(%x: tensor<?x13x13x37xf32>) -> tensor<?x7x7x37xf32> {
  %0 = nn.max_pool2d %x {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC"} : tensor<?x13x13x37xf32> -> tensor<?x7x7x37xf32>
  %1 = nn.max_pool2d %x {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC", nan = "propagate"} : tensor<?x13x13x37xf32> -> tensor<?x7x7x37xf32>
  %2 = nn.max_pool2d %x {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC", nan = "skip"} : tensor<?x13x13x37xf32> -> tensor<?x7x7x37xf32>
  %3 = nn.max_pool2d %x {nan = "skip", kernel = array<i64: 2, 2>, strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = true, layout = "NHWC"} : tensor<?x13x13x37xf32> -> tensor<?x12x12x37xf32>
  func.return %2 : tensor<?x7x7x37xf32>
}

// CHECK-LABEL: func.func @pools
// CHECK-NEXT:    %0 = nn.max_pool2d %x {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC"} : tensor<?x13x13x37xf32> -> tensor<?x7x7x37xf32>
// CHECK-NEXT:    %1 = nn.max_pool2d %x {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC", nan = "propagate"} : tensor<?x13x13x37xf32> -> tensor<?x7x7x37xf32>
// CHECK-NEXT:    %2 = nn.max_pool2d %x {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC", nan = "skip"} : tensor<?x13x13x37xf32> -> tensor<?x7x7x37xf32>
// CHECK-NEXT:    %3 = nn.max_pool2d %x {{{.*}}nan = "skip"{{.*}}} : tensor<?x13x13x37xf32> -> tensor<?x12x12x37xf32>
// CHECK-NEXT:    func.return %2 : tensor<?x7x7x37xf32>
