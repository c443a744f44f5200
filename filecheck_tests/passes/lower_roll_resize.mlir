// RUN: bs-opt %s -p bs-form-stacks,bs-lower-nn-to-loop,bs-fuse | filecheck %s

// nn.roll reads its input through `(i + extent - shift) mod extent`, and
// nn.resize_nearest through `(scale * i + offset) floordiv divisor`; bs-fuse
// composes both maps into the reader's load, with no copy between. nn.pow by 2
// is one multiply.
func.func @roll_resize(%x: tensor<?x5x7x3xf32>) -> tensor<?x10x7x3xf32> {
  %r = nn.roll %x {shifts = array<i64: 0, 2, 6, 0>} : tensor<?x5x7x3xf32> -> tensor<?x5x7x3xf32>
  %u = nn.resize_nearest %r {scale = array<i64: 1, 1, 1, 1>, offset = array<i64: 0, 0, 0, 0>, divisor = array<i64: 1, 2, 1, 1>} : tensor<?x5x7x3xf32> -> tensor<?x10x7x3xf32>
  %p = nn.pow %u {exponent = 2.0 : f64} : tensor<?x10x7x3xf32> -> tensor<?x10x7x3xf32>
  func.return %p : tensor<?x10x7x3xf32>
}

// CHECK-LABEL: func.func @stack0(
// CHECK-NOT:     memref.alloc
// CHECK:         loop.nest (%{{.+}}) = (0, 0, 0, 0) to (%batch, 10, 7, 3) {
// CHECK-NEXT:      %[[V:.+]] = loop.load %x[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, (((d1 floordiv 2) + 3) mod 5), ((d2 + 1) mod 7), d3)> : memref
// CHECK-NEXT:      %[[S:.+]] = arith.mulf %[[V]], %[[V]] : f32
// CHECK-NEXT:      loop.store %[[S]]

// Every other point from the second on, and powers by -0.5 and -1: 1 / sqrt(x), 1 / x.
func.func @stride_pow(%x: tensor<?x6x7xf32>) -> tensor<?x3x7xf32> {
  %u = nn.resize_nearest %x {scale = array<i64: 1, 2, 1>, offset = array<i64: 0, 1, 0>, divisor = array<i64: 1, 1, 1>} : tensor<?x6x7xf32> -> tensor<?x3x7xf32>
  %p = nn.pow %u {exponent = -5.000000e-01 : f64} : tensor<?x3x7xf32> -> tensor<?x3x7xf32>
  %q = nn.pow %p {exponent = -1.000000e+00 : f64} : tensor<?x3x7xf32> -> tensor<?x3x7xf32>
  func.return %q : tensor<?x3x7xf32>
}

// CHECK-LABEL: func.func @stack1(
// CHECK:         %[[V:.+]] = loop.load %x[{{.*}}] map affine_map<(d0, d1, d2) -> (d0, ((d1 * 2) + 1), d2)> : memref
// CHECK:         %[[R:.+]] = math.sqrt %[[V]] : f32
// CHECK:         %[[I:.+]] = arith.divf %{{.+}}, %[[R]] : f32
// CHECK:         arith.divf %{{.+}}, %[[I]] : f32
