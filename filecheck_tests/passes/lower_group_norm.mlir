// RUN: bs-opt %s -p bs-form-stacks,bs-lower-nn-to-loop | filecheck %s

// nn.group_norm over 3 groups of 4 channels of a channels-last tensor: the
// mean and the variance (a second pass) per batch item and group, each a
// reduction over the group's channels and every spatial point, one dim at a
// time (a sum of sums of rows, for large groups' accuracy); then per
// channel scale = rstd * w and shift = -scale * mean + b (the group by a
// floordiv), and y = x * scale + shift.
func.func @gn(%x: tensor<?x7x5x12xf32>, %w: tensor<12xf32>, %b: tensor<12xf32>) -> tensor<?x7x5x12xf32> {
  %0 = nn.group_norm %x weight %w : tensor<12xf32> bias %b : tensor<12xf32> {groups = 3 : i64, axis = 3 : i64, eps = 1.000000e-05 : f64} : tensor<?x7x5x12xf32> -> tensor<?x7x5x12xf32>
  func.return %0 : tensor<?x7x5x12xf32>
}

// CHECK-LABEL: func.func @stack0(
// CHECK:         %mean = memref.alloc(%batch) : memref<?x1x1x3xf32>
// CHECK:         %scale = memref.alloc(%batch) : memref<?x1x1x12xf32>
// CHECK:         loop.nest ({{.*}}) = (0, 0, 0, 0) to (%batch, 1, 1, 3) {
// CHECK-NEXT:      loop.reduce add (%g0) = (0) to (7)
// CHECK-NEXT:        loop.reduce add (%g1) = (0) to (5)
// CHECK-NEXT:          loop.reduce add (%g2) = (0) to (4)
// CHECK-NEXT:            loop.load %x[{{.*}}] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d4, d5, ((d3 * 4) + d6))>
// CHECK:           arith.divf %{{.+}}, %{{.+}} : f32
// CHECK-NEXT:      loop.store %{{.+}}, %mean
// CHECK:           arith.subf
// CHECK-NEXT:      arith.mulf
// CHECK:           math.sqrt
// CHECK:           loop.store %{{.+}}, %rstd
// CHECK:         loop.nest ({{.*}}) = (0, 0, 0, 0) to (%batch, 1, 1, 12) {
// CHECK-NEXT:      loop.load %rstd[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, (d3 floordiv 4))>
// CHECK-NEXT:      %[[W:.+]] = loop.load %w
// CHECK-NEXT:      %[[S:.+]] = arith.mulf %{{.+}}, %[[W]]
// CHECK-NEXT:      %[[N:.+]] = arith.negf %[[S]]
// CHECK-NEXT:      %[[M:.+]] = loop.load %mean
// CHECK-NEXT:      %[[T:.+]] = arith.mulf %[[N]], %[[M]]
// CHECK-NEXT:      %[[B:.+]] = loop.load %b
// CHECK-NEXT:      %[[SH:.+]] = arith.addf %[[T]], %[[B]]
// CHECK-NEXT:      loop.store %[[S]], %scale
// CHECK-NEXT:      loop.store %[[SH]], %shift
// CHECK:         loop.nest ({{.*}}) = (0, 0, 0, 0) to (%batch, 7, 5, 12) {
// CHECK-NEXT:      %[[X:.+]] = loop.load %x
// CHECK-NEXT:      %[[SC:.+]] = loop.load %scale[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, 0, 0, d3)>
// CHECK-NEXT:      %[[Y:.+]] = arith.mulf %[[X]], %[[SC]]
// CHECK-NEXT:      %[[SF:.+]] = loop.load %shift
// CHECK-NEXT:      arith.addf %[[Y]], %[[SF]]
