// RUN: bs-opt %s -p 'bs-register-tile{broadcast-operands=true},bs-prefetch-tiles' | filecheck %s
// RUN: bs-opt %s -p 'bs-register-tile{broadcast-operands=true},bs-prefetch-tiles,bs-prefetch-tiles' | filecheck %s

// A depth-first tile of rows whose prologue (`%x * %g` into the scratch `%s`)
// feeds a register-blocked sum (a 1x1 convolution). Each column block of the
// sum (here one block of 6 columns) prefetches into L2, for each of its
// columns, the row of `%x` that the next tile's prologue reads there: the
// tile's last dim 4 rows on. `%g` does not depend on the rows: no prefetch.
// The pass adds its loops once.
func.func @project(%x: memref<?x6x6x37xf32>, %g: memref<?x1x1x37xf32>, %w: memref<1x1x37x24xf32>, %out: memref<?x6x6x24xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x6x6x37xf32>
  loop.tile (%t0, %t1) = (0, 0) to (%batch, 6) step (1, 4) {
    %s = memref.alloca() : memref<1x4x6x37xf32>
    %c1 = arith.constant 1 : index
    %e0 = arith.addi %t0, %c1 : index
    %c4 = arith.constant 4 : index
    %e1a = arith.addi %t1, %c4 : index
    %c10 = arith.constant 6 : index
    %e1 = arith.minsi %e1a, %c10 : index
    loop.nest (%n, %h, %wc) = (%t0, %t1, 0) to (%e0, %e1, 6) {
      simd.loop (%c) = (0) to (37) {
        %v = simd.load %x[%n, %h, %wc, %c] : memref<?x6x6x37xf32>
        %gv = simd.load %g[%n, %h, %wc, %c] map affine_map<(d0, d1, d2, d3) -> (d0, 0, 0, d3)> : memref<?x1x1x37xf32>
        %y = simd.mulf %v, %gv : !simd.vec<f32>
        simd.store %y, %s[%n, %h, %wc, %c, %t0, %t1] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0 - d4, d1 - d5, d2, d3)> : memref<1x4x6x37xf32>
      }
    }
    loop.nest (%n1, %h1, %w1) = (%t0, %t1, 0) to (%e0, %e1, 6) {
      simd.loop (%o) = (0) to (24) {
        %acc = loop.reduce add contract (%ci) = (0) to (37) init 0.0 : f32 -> !simd.vec<f32> {
          %xv = loop.load %s[%n1, %h1, %w1, %ci, %t0, %t1] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0 - d4, d1 - d5, d2, d3)> : memref<1x4x6x37xf32>
          %wv = simd.load %w[%ci, %o] map affine_map<(d0, d1) -> (0, 0, d0, d1)> : memref<1x1x37x24xf32>
          %sp = simd.splat %xv : f32
          %m = simd.mulf %sp, %wv : !simd.vec<f32>
          loop.yield %m : !simd.vec<f32>
        }
        simd.store %acc, %out[%n1, %h1, %w1, %o] : memref<?x6x6x24xf32>
      }
    }
  }
  func.return
}

// CHECK-LABEL: func.func @project
// CHECK:         loop.nest (%n1, %h1, %w1) = (%t0, %t1, 0) to (%e0, %e1, 1) attributes {bs.columns = 2 : index} {
// CHECK-NEXT:      simd.loop (%[[L0:.*]]) = (0) to (37) attributes {bs.prefetch_next_tile} {
// CHECK-NEXT:        simd.prefetch %x[%n1, %h1, %w1, %[[L0]]] map affine_map<(d0, d1, d2, d3) -> (d0, (d1 + 4), (d2 * 6), d3)> locality 2 : memref<?x6x6x37xf32>
// CHECK-NEXT:      }
// CHECK:           simd.prefetch %x[%n1, %h1, %w1, %{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, (d1 + 4), ((d2 * 6) + 5), d3)> locality 2
// CHECK-NOT:       simd.prefetch
// CHECK:           simd.loop (%o) = (0) to (24) vectors 2 {

// Without a prologue (the sum reads its input itself) nothing is prefetched.
func.func @no_prologue(%x: memref<?x6x6x37xf32>, %w: memref<1x1x37x24xf32>, %out: memref<?x6x6x24xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x6x6x37xf32>
  loop.tile (%t0, %t1) = (0, 0) to (%batch, 6) step (1, 4) {
    %c1 = arith.constant 1 : index
    %e0 = arith.addi %t0, %c1 : index
    %c4 = arith.constant 4 : index
    %e1a = arith.addi %t1, %c4 : index
    %c6 = arith.constant 6 : index
    %e1 = arith.minsi %e1a, %c6 : index
    loop.nest (%n1, %h1, %w1) = (%t0, %t1, 0) to (%e0, %e1, 6) {
      simd.loop (%o) = (0) to (24) {
        %acc = loop.reduce add contract (%ci) = (0) to (37) init 0.0 : f32 -> !simd.vec<f32> {
          %xv = loop.load %x[%n1, %h1, %w1, %ci] : memref<?x6x6x37xf32>
          %wv = simd.load %w[%ci, %o] map affine_map<(d0, d1) -> (0, 0, d0, d1)> : memref<1x1x37x24xf32>
          %sp = simd.splat %xv : f32
          %m = simd.mulf %sp, %wv : !simd.vec<f32>
          loop.yield %m : !simd.vec<f32>
        }
        simd.store %acc, %out[%n1, %h1, %w1, %o] : memref<?x6x6x24xf32>
      }
    }
  }
  func.return
}

// CHECK-LABEL: func.func @no_prologue
// CHECK-NOT:     simd.prefetch
