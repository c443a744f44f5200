// RUN: bs-opt %s -p bs-merge-siblings | filecheck %s

// bs-merge-siblings folds adjacent top-level nests of a kernel into one when
// they share the domain and commute: the channels-last pieces of a cat, each
// writing its own lane range of the output row, become one nest (one phase).

// CHECK-LABEL: func.func @cat_pieces
// CHECK:       loop.nest (%{{.*}}, %{{.*}}, %{{.*}}) = (0, 0, 0) to (%{{.*}}, 5, 7) {
// CHECK:         simd.loop (%{{.*}}) = (0) to (19) {
// CHECK:           simd.store %{{.*}}, %out
// CHECK:         simd.loop (%{{.*}}) = (19) to (30) {
// CHECK:           simd.load %b[%{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, (d3 + -19))>
// CHECK:           simd.store %{{.*}}, %out
// CHECK-NOT:   loop.nest
// CHECK:       func.return
func.func @cat_pieces(%a: memref<?x5x7x19xf32>, %b: memref<?x5x7x11xf32>, %out: memref<?x5x7x30xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %a, %c0 : memref<?x5x7x19xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 5, 7) {
    simd.loop (%c) = (0) to (19) {
      %v = simd.load %a[%n, %h, %w, %c] : memref<?x5x7x19xf32>
      simd.store %v, %out[%n, %h, %w, %c] : memref<?x5x7x30xf32>
    }
  }
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 5, 7) {
    simd.loop (%c) = (19) to (30) {
      %v = simd.load %b[%n, %h, %w, %c] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, (d3 + -19))> : memref<?x5x7x11xf32>
      simd.store %v, %out[%n, %h, %w, %c] : memref<?x5x7x30xf32>
    }
  }
  func.return
}

// The second nest reads what the first writes: both stay (one phase each,
// with the barrier between them).
// CHECK-LABEL: func.func @dependent
// CHECK:       loop.nest
// CHECK:       loop.nest
func.func @dependent(%a: memref<?x5x7x19xf32>, %t: memref<?x5x7x19xf32>, %out: memref<?x5x7x19xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %a, %c0 : memref<?x5x7x19xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 5, 7) {
    simd.loop (%c) = (0) to (19) {
      %v = simd.load %a[%n, %h, %w, %c] : memref<?x5x7x19xf32>
      simd.store %v, %t[%n, %h, %w, %c] : memref<?x5x7x19xf32>
    }
  }
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 5, 7) {
    simd.loop (%c) = (0) to (19) {
      %v = simd.load %t[%n, %h, %w, %c] : memref<?x5x7x19xf32>
      simd.store %v, %out[%n, %h, %w, %c] : memref<?x5x7x19xf32>
    }
  }
  func.return
}

// Overlapping lane ranges of the same output: not merged.
// CHECK-LABEL: func.func @overlap
// CHECK:       loop.nest
// CHECK:       loop.nest
func.func @overlap(%a: memref<?x5x7x19xf32>, %out: memref<?x5x7x19xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %a, %c0 : memref<?x5x7x19xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 5, 7) {
    simd.loop (%c) = (0) to (12) {
      %v = simd.load %a[%n, %h, %w, %c] : memref<?x5x7x19xf32>
      simd.store %v, %out[%n, %h, %w, %c] : memref<?x5x7x19xf32>
    }
  }
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 5, 7) {
    simd.loop (%c) = (10) to (19) {
      %v = simd.load %a[%n, %h, %w, %c] : memref<?x5x7x19xf32>
      simd.store %v, %out[%n, %h, %w, %c] : memref<?x5x7x19xf32>
    }
  }
  func.return
}
