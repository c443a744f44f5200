// RUN: bs-opt %s | filecheck %s
// RUN: bs-opt %s | bs-opt - | filecheck %s
// RUN: bs-opt %s --print-op-generic | bs-opt - | filecheck %s

// nn.sigmoid and nn.silu take an optional `impl`. Absent, the logistic function
// is 1 / (1 + exp(-x)) (PyTorch's); impl = "eigen" is TensorFlow's CPU kernel
// (Eigen's scalar_logistic_op<float>), which the TensorFlow frontend emits.
// sigmoid_impl_errors.mlir has the verifier's messages.

func.func @impl(%x: tensor<?x13x11x19xf32>) -> tensor<?x13x11x19xf32> {
  %0 = nn.sigmoid %x : tensor<?x13x11x19xf32> -> tensor<?x13x11x19xf32>
  %1 = nn.sigmoid %0 {impl = "eigen"} : tensor<?x13x11x19xf32> -> tensor<?x13x11x19xf32>
  %2 = nn.silu %1 {impl = "eigen"} : tensor<?x13x11x19xf32> -> tensor<?x13x11x19xf32>
  %3 = nn.silu %2 : tensor<?x13x11x19xf32> -> tensor<?x13x11x19xf32>
  func.return %3 : tensor<?x13x11x19xf32>
}

// CHECK-LABEL: func.func @impl
// CHECK-NEXT:    %0 = nn.sigmoid %x : tensor<?x13x11x19xf32> -> tensor<?x13x11x19xf32>
// CHECK-NEXT:    %1 = nn.sigmoid %0 {impl = "eigen"} : tensor<?x13x11x19xf32> -> tensor<?x13x11x19xf32>
// CHECK-NEXT:    %2 = nn.silu %1 {impl = "eigen"} : tensor<?x13x11x19xf32> -> tensor<?x13x11x19xf32>
// CHECK-NEXT:    %3 = nn.silu %2 : tensor<?x13x11x19xf32> -> tensor<?x13x11x19xf32>
