// RUN: bs-opt %s -p bs-form-stacks,bs-lower-nn-to-loop,bs-fuse | filecheck %s

// nn.l2_normalize: per row, the sum of squares, its square root clamped below
// at eps (NaN stays NaN), into a scratch buffer of one value per row; then
// every point divided by its row's norm.
func.func @l2(%x: tensor<?x13x37xf32>) -> tensor<?x13x37xf32> {
  %y = nn.l2_normalize %x {axis = 2 : i64, eps = 1.000000e-12 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return %y : tensor<?x13x37xf32>
}

// CHECK-LABEL: func.func @stack0(
// CHECK:         %[[N:.+]] = memref.alloc(%batch) : memref<?x13x1xf32>
// CHECK:         loop.nest (%[[I:.+]], %[[J:.+]], %[[K:.+]]) = (0, 0, 0) to (%batch, 13, 1) {
// CHECK-NEXT:      %[[S:.+]] = loop.reduce add (%{{.+}}) = (0) to (37) init 0.000000e+00 : f32 -> f32 {
// CHECK-NEXT:        %[[V:.+]] = loop.load %x
// CHECK-NEXT:        %[[SQ:.+]] = arith.mulf %[[V]], %[[V]] : f32
// CHECK-NEXT:        loop.yield %[[SQ]] : f32
// CHECK:           %[[R:.+]] = math.sqrt %[[S]] : f32
// CHECK-NEXT:      %[[E:.+]] = arith.constant 1.000000e-12 : f32
// CHECK-NEXT:      %[[LT:.+]] = arith.cmpf olt, %[[R]], %[[E]] : f32
// CHECK-NEXT:      %[[M:.+]] = arith.select %[[LT]], %[[E]], %[[R]] : f32
// CHECK-NEXT:      loop.store %[[M]], %[[N]]
// CHECK:         loop.nest
// CHECK-NEXT:      %[[X:.+]] = loop.load %x
// CHECK-NEXT:      %[[D:.+]] = loop.load %[[N]][{{.*}}] map affine_map<(d0, d1, d2) -> (d0, d1, 0)>
// CHECK-NEXT:      arith.divf %[[X]], %[[D]] : f32
