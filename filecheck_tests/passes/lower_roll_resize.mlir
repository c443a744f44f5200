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

// nn.resize_bilinear of 4 -> 8 rows and 3 -> 6 columns: one nest per pair of
// a row run and a column run in which the four input points are affine reads
// (here rows 0-6 and 7, columns 0-4 and 5); bs-fuse inlines the ReLU into
// each read. Within a run: x[r0, c0] * cw0 + x[r0, c1] * cw1 per row, then
// the rows weighted by rw0 and rw1.
func.func @bilinear(%x: tensor<?x4x3x37xf32>, %rw: tensor<2x8xf32>, %cw: tensor<2x6xf32>) -> tensor<?x8x6x37xf32> {
  %r = nn.relu %x : tensor<?x4x3x37xf32> -> tensor<?x4x3x37xf32>
  %u = nn.resize_bilinear %r, %rw, %cw {dims = array<i64: 1, 2>, rows = array<i64: 0, 0, 0, 1, 1, 2, 2, 3, 1, 1, 1, 2, 2, 3, 3, 3>, cols = array<i64: 0, 0, 0, 1, 1, 2, 1, 1, 1, 2, 2, 2>} : tensor<?x4x3x37xf32>, tensor<2x8xf32>, tensor<2x6xf32> -> tensor<?x8x6x37xf32>
  func.return %u : tensor<?x8x6x37xf32>
}

// CHECK-LABEL: func.func @stack2(
// CHECK-NOT:     memref.alloc
// CHECK:         loop.nest (%{{.+}}) = (0, 0, 0, 0) to (%batch, 7, 5, 37) {
// CHECK-NEXT:      %[[RW0:.+]] = loop.load %rw[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (0, d1)>
// CHECK-NEXT:      %[[RW1:.+]] = loop.load %rw[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (1, d1)>
// CHECK-NEXT:      %[[CW0:.+]] = loop.load %cw[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (0, d2)>
// CHECK-NEXT:      %[[CW1:.+]] = loop.load %cw[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (1, d2)>
// CHECK-NEXT:      loop.load %x[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, ((d1 * 3) floordiv 7), ((d2 * 2) floordiv 5), d3)>
// CHECK:           arith.select
// CHECK-NEXT:      loop.load %x[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, ((d1 * 3) floordiv 7), (((d2 * 2) + 5) floordiv 5), d3)>
// CHECK:           loop.load %x[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, (((d1 * 3) + 7) floordiv 7), ((d2 * 2) floordiv 5), d3)>
// CHECK:           loop.load %x[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, (((d1 * 3) + 7) floordiv 7), (((d2 * 2) + 5) floordiv 5), d3)>
// CHECK:           %[[A:.+]] = arith.mulf %{{.+}}, %[[CW0]] : f32
// CHECK-NEXT:      %[[B:.+]] = arith.mulf %{{.+}}, %[[CW1]] : f32
// CHECK-NEXT:      %[[T0:.+]] = arith.addf %[[A]], %[[B]] : f32
// CHECK:           %[[T1:.+]] = arith.addf
// CHECK-NEXT:      %[[C:.+]] = arith.mulf %[[T0]], %[[RW0]] : f32
// CHECK-NEXT:      %[[D:.+]] = arith.mulf %[[T1]], %[[RW1]] : f32
// CHECK-NEXT:      %[[S:.+]] = arith.addf %[[C]], %[[D]] : f32
// CHECK-NEXT:      loop.store %[[S]], %out[{{.*}}] : f32
// CHECK:         loop.nest (%{{.+}}) = (0, 0, 0, 0) to (%batch, 7, 1, 37) {
// CHECK:           loop.store %{{.+}}, %out[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, d1, (d2 + 5), d3)>
// CHECK:         loop.nest (%{{.+}}) = (0, 0, 0, 0) to (%batch, 1, 5, 37) {
// CHECK:           loop.store %{{.+}}, %out[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, (d1 + 7), d2, d3)>
// CHECK:         loop.nest (%{{.+}}) = (0, 0, 0, 0) to (%batch, 1, 1, 37) {
// CHECK:           loop.load %x[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, 3, 2, d3)>
// CHECK:           loop.store %{{.+}}, %out[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, (d1 + 7), (d2 + 5), d3)>
