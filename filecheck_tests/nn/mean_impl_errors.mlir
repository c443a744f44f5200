// RUN: bs-opt %s --split-input-file --verify-diagnostics | filecheck %s

// nn.mean `impl`: absent (the sum in order) or "eigen", TensorFlow's order for
// a mean that keeps the innermost dim (see passes/lower_mean_eigen.mlir).

func.func @f(%x: tensor<?x5x5x37xf32>) {
  %0 = nn.mean %x {dims = array<i64: 2, 3>, keepdim = false, impl = "eigen"} : tensor<?x5x5x37xf32> -> tensor<?x5xf32>
  func.return
}

// CHECK: nn.mean: impl "eigen" keeps the innermost dim, which dims reduce

// -----

func.func @f(%x: tensor<?x5x5x37xf32>) {
  %0 = nn.mean %x {dims = array<i64: 1, 2>, keepdim = false, impl = "tree"} : tensor<?x5x5x37xf32> -> tensor<?x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.mean: impl must be one of ['eigen'] (or absent), got 'tree'
