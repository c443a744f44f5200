// RUN: bs-opt %s --split-input-file --verify-diagnostics | filecheck %s

// nn.sigmoid / nn.silu `impl`: absent (exact) or "eigen" (see sigmoid_impl.mlir).

// "exact" is spelled by leaving impl out, so that built and parsed IR compare equal.
func.func @f(%x: tensor<?x37xf32>) {
  %0 = nn.sigmoid %x {impl = "exact"} : tensor<?x37xf32> -> tensor<?x37xf32>
  func.return
}

// CHECK: nn.sigmoid: impl must be one of ['eigen'] (or absent), got 'exact'

// -----

func.func @f(%x: tensor<?x37xf32>) {
  %0 = nn.silu %x {impl = 1 : i64} : tensor<?x37xf32> -> tensor<?x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: 1 : i64 should be of base attribute string
