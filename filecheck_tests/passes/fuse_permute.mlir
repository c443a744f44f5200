// RUN: bs-opt %s -p bs-form-stacks,bs-lower-nn-to-loop,bs-fuse,bs-reorder,bs-vectorize | filecheck %s

// nn.permute moves data into another memory order; after bs-fuse its reader
// loads the input through the permuted map and no copy is left. Here a
// channels-last-like [N, H, W, C] operand is added to one stored [N, W, H, C].
func.func @f(%x: tensor<?x13x7x37xf32>, %y: tensor<?x7x13x37xf32>) -> tensor<?x7x13x37xf32> {
  %p = nn.permute %x {dims = array<i64: 0, 2, 1, 3>} : tensor<?x13x7x37xf32> -> tensor<?x7x13x37xf32>
  %a = nn.add %p, %y : (tensor<?x7x13x37xf32>, tensor<?x7x13x37xf32>) -> tensor<?x7x13x37xf32>
  func.return %a : tensor<?x7x13x37xf32>
}

// CHECK-LABEL: func.func @stack0
// CHECK-NOT:     memref.alloc
// CHECK:         loop.nest (%n, %c, %h) = (0, 0, 0) to (%batch, 7, 13) {
// CHECK-NEXT:      simd.loop (%w) = (0) to (37) {
// CHECK-NEXT:        %{{.*}} = simd.load %x[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d2, d1, d3)> : memref<?x13x7x37xf32>
// CHECK-NEXT:        %{{.*}} = simd.load %y[%n, %c, %h, %w] : memref<?x7x13x37xf32>
// CHECK-NEXT:        simd.addf
