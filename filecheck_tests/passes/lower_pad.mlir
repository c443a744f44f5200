// RUN: bs-opt %s -p bs-form-stacks,bs-lower-nn-to-loop,bs-fuse | filecheck %s

// nn.pad reads its input through a shifted map that yields the padding value
// out of bounds (negative counts crop: no padding there); bs-fuse then reads
// the padded input straight from the next layer, with no copy between.
func.func @pad(%x: tensor<?x5x7x3xf32>) -> tensor<?x8x5x3xf32> {
  %y = nn.pad %x {low = array<i64: 0, 1, -1, 0>, high = array<i64: 0, 2, -1, 0>, value = 0.5 : f64} : tensor<?x5x7x3xf32> -> tensor<?x8x5x3xf32>
  %z = nn.relu %y : tensor<?x8x5x3xf32> -> tensor<?x8x5x3xf32>
  func.return %z : tensor<?x8x5x3xf32>
}

// CHECK-LABEL: func.func @stack0(
// CHECK-NOT:     memref.alloc
// CHECK:         loop.nest (%{{.+}}) = (0, 0, 0, 0) to (%batch, 8, 5, 3) {
// CHECK-NEXT:      %[[V:.+]] = loop.load %x[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, (d1 + -1), (d2 + 1), d3)> pad 5.000000e-01 : f32
// CHECK:           arith.select %{{.+}}, %{{.+}}, %[[V]]
// CHECK-NEXT:      loop.store

// A crop alone never reads out of bounds: a plain load.
func.func @crop(%x: tensor<?x5x7x3xf32>) -> tensor<?x5x4x3xf32> {
  %y = nn.pad %x {low = array<i64: 0, 0, -2, 0>, high = array<i64: 0, 0, -1, 0>, value = 0.0 : f64} : tensor<?x5x7x3xf32> -> tensor<?x5x4x3xf32>
  func.return %y : tensor<?x5x4x3xf32>
}

// CHECK-LABEL: func.func @stack1(
// CHECK:         loop.load %x[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, d1, (d2 + 2), d3)> : memref
