// RUN: bs-opt %s -p bs-register-tile | filecheck %s
// RUN: bs-opt %s -p 'bs-register-tile{lanes=8 registers=16}' | filecheck %s --check-prefix=AVX2
// RUN: bs-opt %s -p 'bs-register-tile{broadcast-operands=true}' | filecheck %s --check-prefix=BCAST

// bs-register-tile blocks a vectorized convolution (a `loop.reduce add
// contract` in a simd.loop) in registers: the output column `%w` is
// strip-mined by P (its input pixel is broadcast against a weight row that all
// columns share) and the simd.loop spans V vectors. The reduction gets P
// results; the body and the epilogue are cloned per column, except what does
// not depend on the column (the weight row, the per-channel bias). Columns past
// the end clamp to the last one, 12, and recompute it: their stores are
// guarded (`if %insideK`), so only column 12's own iteration writes it.

// 1x1 convolution, 37 -> 53 channels, one row of 13 columns, with bias: with
// 16 lanes V = 4 (53 channels in 64 lanes); 27 of the 32 registers are left
// for accumulators, so P is 3 to 6, and P = 5 wastes the fewest columns (15
// for 13).
func.func @conv1x1(%x: memref<?x1x13x37xf32>, %wt: memref<1x1x37x53xf32>, %b: memref<53xf32>, %out: memref<?x1x13x53xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x1x13x37xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 1, 13) {
    simd.loop (%o) = (0) to (53) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 37) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4, d2 + d5, d6)> : memref<?x1x13x37xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<1x1x37x53xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      %bv = simd.load %b[%o] : memref<53xf32>
      %y = simd.addf %acc, %bv : !simd.vec<f32>
      simd.store %y, %out[%n, %h, %w, %o] : memref<?x1x13x53xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @conv1x1
// CHECK:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 1, 3) attributes {bs.columns = 2 : index} {
// CHECK:           %[[BASE:.*]] = arith.muli %w, %{{.*}} : index
// CHECK:           %col0 = arith.minsi %{{.*}}, %{{.*}} : index
// CHECK:           %col4 = arith.minsi %[[P4:.*]], %[[LAST:.*]] : index
// CHECK-NEXT:      %inside4 = arith.cmpi sle, %[[P4]], %[[LAST]] : index
// CHECK-NOT:       %col5
// CHECK-NEXT:      simd.loop (%o) = (0) to (53) vectors 4 {
// CHECK-NEXT:        %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 37) init 0.000000e+00 : f32 -> !simd.vec<f32>, !simd.vec<f32>, !simd.vec<f32>, !simd.vec<f32>, !simd.vec<f32> {
// CHECK-NEXT:          loop.load %x[%n, %h, %col0, %o, %kh, %kw, %ci]
// CHECK:               loop.load %x[%n, %h, %col4, %o, %kh, %kw, %ci]
// CHECK-NEXT:          simd.load %wt[%kh, %kw, %ci, %o]
// CHECK-NOT:           simd.load %wt
// CHECK:               simd.mulf
// CHECK:               loop.yield %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : !simd.vec<f32>, !simd.vec<f32>, !simd.vec<f32>, !simd.vec<f32>, !simd.vec<f32>
// CHECK-NEXT:        }
// CHECK-NEXT:        %[[BIAS:.*]] = simd.load %b[%o] : memref<53xf32>
// CHECK-NOT:         simd.load %b
//   each column's epilogue whole before the next one's: a long one (SiLU's
//   exp) then keeps one column's values live, not every column's
// CHECK-NEXT:        %[[Y0:.*]] = simd.addf %{{.*}}, %[[BIAS]] : !simd.vec<f32>
// CHECK-NEXT:        simd.store %[[Y0]], %out[%n, %h, %col0, %o] : memref
// CHECK-NEXT:        %[[Y1:.*]] = simd.addf %{{.*}}, %[[BIAS]] : !simd.vec<f32>
// CHECK-NEXT:        simd.store %[[Y1]], %out[%n, %h, %col1, %o] if %inside1 : memref
// CHECK:             simd.store %{{.*}}, %out[%n, %h, %col4, %o] if %inside4 : memref

// With 8 lanes and 16 registers (AVX2): V = 4 (32 lanes, two chunks for 53
// channels) leaves 11 registers, P = 2 (columns 13 in 14).
// AVX2-LABEL: func.func @conv1x1
// AVX2:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 1, 7) attributes {bs.columns = 2 : index} {
// AVX2:         simd.loop (%o) = (0) to (53) vectors 4 {

// With broadcast-operands (AVX-512: an FMA can read a broadcast input from
// memory), where no block of 6 columns fits, P may also take the broadcast's
// register (LLVM then spills one accumulator per step): P is 3 to 7, and P = 7
// wastes the fewest columns (14 for 13).
// BCAST-LABEL: func.func @conv1x1
// BCAST:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 1, 2) attributes {bs.columns = 2 : index} {
// BCAST:           %col6 = arith.minsi
// BCAST-NEXT:      %inside6 = arith.cmpi sle
// BCAST-NEXT:      simd.loop (%o) = (0) to (53) vectors 4 {

// A 1x1 convolution over 13 rows of 13 columns, with broadcast-operands: 6
// columns (24 accumulators, the V = 4 weight vectors and the broadcast,
// which 4 FMAs share: no spill) fit no row of 13 (18 for 13), but they fit
// the 169 points taken row-major in 29 blocks of 6 (174, 2.9% past the end). The nest runs over 29 rows of one block; each
// column computes its point (clamped to the last one, 168) and from it its
// own row and column, which every access of the column uses.
func.func @across_rows(%x: memref<?x13x13x37xf32>, %wt: memref<1x1x37x53xf32>, %out: memref<?x13x13x53xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x37xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 13) {
    simd.loop (%o) = (0) to (53) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 37) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4, d2 + d5, d6)> : memref<?x13x13x37xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<1x1x37x53xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %o] : memref<?x13x13x53xf32>
    }
  }
  func.return
}

// Without broadcast-operands a register is kept for the broadcast anyway, and
// the columns stay in their row (P = 5).
// CHECK-LABEL: func.func @across_rows
// CHECK:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 3) attributes {bs.columns = 2 : index} {

// BCAST-LABEL: func.func @across_rows
// BCAST:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 29, 1) attributes {bs.columns = 2 : index} {
// BCAST:           %[[ROW:.*]] = arith.muli %h, %[[ONE:.*]] : index
// BCAST-NEXT:      %[[BLOCK:.*]] = arith.addi %[[ROW]], %w : index
// BCAST-NEXT:      %[[BASE:.*]] = arith.muli %[[BLOCK]], %[[SIX:.*]] : index
// BCAST:           %[[P0:.*]] = arith.addi %[[BASE]], %{{.*}} : index
// BCAST-NEXT:      %[[C0:.*]] = arith.minsi %[[P0]], %[[LAST:.*]] : index
// BCAST-NEXT:      %row0 = arith.divsi %[[C0]], %[[WIDTH:.*]] : index
// BCAST-NEXT:      %[[S0:.*]] = arith.muli %row0, %[[WIDTH]] : index
// BCAST-NEXT:      %col0 = arith.subi %[[C0]], %[[S0]] : index
// BCAST:           %[[P1:.*]] = arith.addi %[[BASE]], %{{.*}} : index
// BCAST:           %col1 = arith.subi
// BCAST-NEXT:      %inside1 = arith.cmpi sle, %[[P1]], %[[LAST]] : index
// BCAST:           %col5 = arith.subi
// BCAST-NEXT:      %inside5 = arith.cmpi sle
// BCAST-NOT:       %col6
// BCAST-NEXT:      simd.loop (%o) = (0) to (53) vectors 4 {
// BCAST-NEXT:        %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = loop.reduce add contract
// BCAST-NEXT:          loop.load %x[%n, %row0, %col0, %o, %kh, %kw, %ci]
// BCAST:               loop.load %x[%n, %row5, %col5, %o, %kh, %kw, %ci]
// BCAST:             simd.store %{{.*}}, %out[%n, %row0, %col0, %o] : memref
// BCAST:             simd.store %{{.*}}, %out[%n, %row5, %col5, %o] if %inside5 : memref

// A 3x3 convolution's columns stay in their row (its taps then share a
// row's checks and addresses): 13 rows of 13 columns, P = 5 (15 for 13), and
// with broadcast-operands P = 7 (14 for 13).
func.func @taps_in_rows(%x: memref<?x13x13x37xf32>, %wt: memref<3x3x37x53xf32>, %out: memref<?x13x13x53xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x37xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 13) {
    simd.loop (%o) = (0) to (53) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (3, 3, 37) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4 - 1, d2 + d5 - 1, d6)> pad 0.000000e+00 : f32 : memref<?x13x13x37xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<3x3x37x53xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %o] : memref<?x13x13x53xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @taps_in_rows
// CHECK:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 3) attributes {bs.columns = 2 : index} {
// CHECK:           %col4 = arith.minsi
// CHECK-NOT:       %row0
// CHECK:           simd.loop (%o) = (0) to (53) vectors 4 {

// BCAST-LABEL: func.func @taps_in_rows
// BCAST:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 2) attributes {bs.columns = 2 : index} {
// BCAST:           %col6 = arith.minsi
// BCAST-NOT:       %row0
// BCAST:           simd.loop (%o) = (0) to (53) vectors 4 {

// With broadcast-operands a block of 7 columns × 4 vectors spills one
// accumulator on every step (28 of them, the 4 weight vectors and the
// broadcast: 33 registers). Where blocks that need no spill cover the row
// exactly, the row is split instead: 28 columns as 3 blocks of 6 and a second
// nest of 2 blocks of 5, whose accesses read and write columns 18 + ...;
// neither clamps a column, so no store is guarded. Without broadcast-operands
// no block spills (P = 4, which divides 28), and the row stays whole.
func.func @split_row(%x: memref<?x3x28x37xf32>, %wt: memref<3x3x37x53xf32>, %b: memref<53xf32>, %out: memref<?x3x28x53xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x3x28x37xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 3, 28) {
    simd.loop (%o) = (0) to (53) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (3, 3, 37) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4 - 1, d2 + d5 - 1, d6)> pad 0.000000e+00 : f32 : memref<?x3x28x37xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<3x3x37x53xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      %bv = simd.load %b[%o] : memref<53xf32>
      %y = simd.addf %acc, %bv : !simd.vec<f32>
      simd.store %y, %out[%n, %h, %w, %o] : memref<?x3x28x53xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @split_row
// CHECK:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 3, 7) attributes {bs.columns = 2 : index} {
// CHECK:           %col3 = arith.addi
// CHECK-NOT:     loop.nest
// CHECK:         func.return

// BCAST-LABEL: func.func @split_row
// BCAST:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 3, 3) attributes {bs.columns = 2 : index} {
// BCAST:           %[[BASE:.*]] = arith.muli %w, %{{.*}} : index
// BCAST:           %col5 = arith.addi %[[BASE]], %{{.*}} : index
// BCAST-NOT:       %col6
// BCAST-NEXT:      simd.loop (%o) = (0) to (53) vectors 4 {
// BCAST-NEXT:        %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = loop.reduce add contract
// BCAST-NEXT:          loop.load %x[%n, %h, %col0, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, ((d1 + d4) + -1), ((d2 + d5) + -1), d6)>
// BCAST-NOT:         if %inside
// BCAST:             simd.store %{{.*}}, %out[%n, %h, %col5, %o] : memref
// BCAST:         loop.nest (%n_1, %h_1, %w_1) = (0, 0, 0) to (%batch, 3, 2) attributes {bs.columns = 2 : index} {
// BCAST:           %col4_1 = arith.addi
// BCAST-NOT:       %col5_1
// BCAST-NEXT:      simd.loop (%o_1) = (0) to (53) vectors 4 {
// BCAST-NEXT:        %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = loop.reduce add contract
// BCAST-NEXT:          loop.load %x[%n_1, %h_1, %col0_1, %o_1, %kh_1, %kw_1, %ci_1] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, ((d1 + d4) + -1), (((d2 + 18) + d5) + -1), d6)>
// BCAST:             simd.load %b[%o_1] : memref<53xf32>
// BCAST-NOT:         if %inside
// BCAST:             simd.store %{{.*}}, %out[%n_1, %h_1, %col4_1, %o_1] map affine_map<(d0, d1, d2, d3) -> (d0, d1, (d2 + 18), d3)> : memref
// BCAST-NOT:     loop.nest
// BCAST:         func.return

// A reduction without `contract` (an average pool) is not a contraction: unchanged.
func.func @avg(%x: memref<?x13x13x37xf32>, %out: memref<?x13x13x37xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x37xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 13) {
    simd.loop (%c) = (0) to (37) {
      %acc = loop.reduce add (%kh) = (0) to (1) init 0.0 : f32 -> !simd.vec<f32> {
        %v = simd.load %x[%n, %h, %w, %c, %kh] map affine_map<(d0, d1, d2, d3, d4) -> (d0, d1 + d4, d2, d3)> : memref<?x13x13x37xf32>
        loop.yield %v : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %c] : memref<?x13x13x37xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @avg
// CHECK:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 13) {
// CHECK-NEXT:      simd.loop (%c) = (0) to (37) {
// CHECK-NEXT:        %{{.*}} = loop.reduce add (%kh)

// Weights packed in blocks of 64 output channels ([2, 1, 1, 37, 64] for 100
// channels): the lanes of a block are one channel block `cb` (a new innermost
// nest dim, the weights being small), so `o floordiv 64` is `cb` and the
// weight row is contiguous: `o mod 64` becomes `o - cb * 64`.
func.func @packed(%x: memref<?x13x13x37xf32>, %wt: memref<2x1x1x37x64xf32>, %out: memref<?x13x13x100xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x37xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 13) {
    simd.loop (%o) = (0) to (100) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 37) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4, d2 + d5, d6)> : memref<?x13x13x37xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d3 floordiv 64, d0, d1, d2, d3 mod 64)> : memref<2x1x1x37x64xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %o] : memref<?x13x13x100xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @packed
// CHECK:         loop.nest (%n, %h, %w, %cb) = (0, 0, 0, 0) to (%batch, 13, 3, 2) attributes {bs.columns = 2 : index} {
// CHECK:           %[[LO:.*]] = arith.addi %{{.*}}, %{{.*}} : index
// CHECK:           %[[HI:.*]] = arith.minsi %{{.*}}, %{{.*}} : index
// CHECK:           simd.loop (%o) = (%[[LO]]) to (%[[HI]]) vectors 4 {
// CHECK:             simd.load %wt[%kh, %kw, %ci, %o, %cb] map affine_map<(d0, d1, d2, d3, d4) -> (d4, d0, d1, d2, (d3 + (d4 * -64)))>

// Where the blocks divide the channels (128 in blocks of 64), every block is
// whole: its upper bound is `lower + 64`, with no `min` (the lowering then
// emits no masked tail).
func.func @packed_whole(%x: memref<?x13x13x37xf32>, %wt: memref<2x1x1x37x64xf32>, %out: memref<?x13x13x128xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x37xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 13) {
    simd.loop (%o) = (0) to (128) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 37) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4, d2 + d5, d6)> : memref<?x13x13x37xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d3 floordiv 64, d0, d1, d2, d3 mod 64)> : memref<2x1x1x37x64xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %o] : memref<?x13x13x128xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @packed_whole
// CHECK:         loop.nest (%n, %h, %w, %cb) = (0, 0, 0, 0) to (%batch, 13, 3, 2) attributes {bs.columns = 2 : index} {
// CHECK:           %[[LO:.*]] = arith.addi %{{.*}}, %{{.*}} : index
// CHECK-NEXT:      %[[HI:.*]] = arith.addi %[[LO]], %{{.*}} : index
// CHECK-NOT:       arith.minsi %[[HI]]
// CHECK:           simd.loop (%o) = (%[[LO]]) to (%[[HI]]) vectors 4 {

// A grouped 1x1 convolution, 2 groups of 21 -> 32 channels: vectorized, its
// input load reads channel `(o floordiv 32) * 21 + ci`, so the lanes of a
// vector may lie in two groups. Blocks of 2 vectors (V * 16 divides the 32
// channels of a group; 4 would not) are a channel dim `cb` whose lanes all lie
// in group `cb`: the input becomes one scalar load of `cb * 21 + ci`,
// broadcast, as without groups.
func.func @grouped(%x: memref<?x13x13x42xf32>, %wt: memref<1x1x21x64xf32>, %out: memref<?x13x13x64xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x42xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 13) {
    simd.loop (%o) = (0) to (64) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 21) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = simd.load %x[%n, %o, %h, %w, %ci, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d2 + d5, d3 + d6, (d1 floordiv 32) * 21 + d4)> : memref<?x13x13x42xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<1x1x21x64xf32>
        %m = simd.mulf %xv, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %o] : memref<?x13x13x64xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @grouped
// CHECK:         loop.nest (%n, %h, %w, %cb) = (0, 0, 0, 0) to (%batch, 13, {{[0-9]+}}, 2) attributes {bs.columns = 2 : index} {
// CHECK:           %[[LO:.*]] = arith.addi %{{.*}}, %{{.*}} : index
// CHECK-NEXT:      %[[HI:.*]] = arith.addi %[[LO]], %{{.*}} : index
// CHECK:           simd.loop (%o) = (%[[LO]]) to (%[[HI]]) vectors 2 {
// CHECK-NEXT:        loop.reduce add contract
// CHECK-NEXT:          %[[X0:.*]] = loop.load %x[%n, %o, %h, %col0, %ci, %kh, %kw, %cb] map affine_map<(d0, d1, d2, d3, d4, d5, d6, d7) -> (d0, (d2 + d5), (d3 + d6), ((d7 * 21) + d4))>
// CHECK-NEXT:          simd.splat %[[X0]] : f32
// CHECK-NOT:           simd.load %x
// CHECK:               simd.load %wt[%kh, %kw, %ci, %o]

// 37 -> 24 channels over 56 columns: V = 2. Each broadcast feeds only two
// FMAs, so LLVM keeps it in a register rather than folding it into them:
// at most REGISTER_BROADCAST_ACCUMULATORS = 20 accumulators, P = 8 (56 = 7 x 8),
// not the 14 that 30 free registers would allow (LLVM spilled 4 of those).
func.func @conv1x1_narrow(%x: memref<?x3x56x37xf32>, %wt: memref<1x1x37x24xf32>, %out: memref<?x3x56x24xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x3x56x37xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 3, 56) {
    simd.loop (%o) = (0) to (24) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 37) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4, d2 + d5, d6)> : memref<?x3x56x37xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<1x1x37x24xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %o] : memref<?x3x56x24xf32>
    }
  }
  func.return
}

// BCAST-LABEL: func.func @conv1x1_narrow
// BCAST:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 3, 7) attributes {bs.columns = 2 : index} {
// BCAST:           %col7 = arith.addi
// BCAST-NOT:       %col8
// BCAST:           simd.loop (%o) = (0) to (24) vectors 2 {

// A depthwise 3×3 window: each column loads its own input vectors (no
// broadcast), and column j's tap kw reads what column j+1's tap kw-1 reads.
// The block unrolls the row of taps (`unroll 1`: %kw on), so the lowering
// loads each input vector once per row of taps. A block is one vector of
// channels and at most ROW_TAP_COLUMNS = 8 columns, the largest number down
// to 4 that divides the row (56 = 7 × 8: every column a plain `addi`, with no
// clamp, as the shared loads need).
func.func @depthwise(%x: memref<?x58x58x144xf32>, %wt: memref<3x3x144xf32>, %out: memref<?x56x56x144xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x58x58x144xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 56, 56) {
    simd.loop (%c) = (0) to (144) {
      %acc = loop.reduce add contract (%kh, %kw) = (0, 0) to (3, 3) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = simd.load %x[%n, %h, %w, %c, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1 + d4, d2 + d5, d3)> : memref<?x58x58x144xf32>
        %wv = simd.load %wt[%kh, %kw, %c] : memref<3x3x144xf32>
        %m = simd.mulf %xv, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %c] : memref<?x56x56x144xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @depthwise
// CHECK:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 56, 7) attributes {bs.columns = 2 : index} {
// CHECK:           %col7 = arith.addi
// CHECK-NOT:       arith.minsi
// CHECK-NEXT:      simd.loop (%c) = (0) to (144) vectors 1 {
// CHECK-NEXT:        {{(%[0-9]+, ){7}%[0-9]+}} = loop.reduce add contract unroll 1 (%kh, %kw) = (0, 0) to (3, 3)
// BCAST-LABEL: func.func @depthwise
// BCAST:         loop.reduce add contract unroll 1 (%kh, %kw)

// A row that no such block divides (13 columns) takes blocks of 8 and, in a
// second nest over its last columns, one block of the 5 left: again no clamp.
func.func @depthwise_tail(%x: memref<?x15x15x40xf32>, %wt: memref<3x3x40xf32>, %out: memref<?x13x13x40xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x15x15x40xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 13) {
    simd.loop (%c) = (0) to (40) {
      %acc = loop.reduce add contract (%kh, %kw) = (0, 0) to (3, 3) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = simd.load %x[%n, %h, %w, %c, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1 + d4, d2 + d5, d3)> : memref<?x15x15x40xf32>
        %wv = simd.load %wt[%kh, %kw, %c] : memref<3x3x40xf32>
        %m = simd.mulf %xv, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %c] : memref<?x13x13x40xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @depthwise_tail
// CHECK:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 1) attributes {bs.columns = 2 : index} {
// CHECK-NOT:       arith.minsi
// CHECK:           {{(%[0-9]+, ){7}%[0-9]+}} = loop.reduce add contract unroll 1 (%kh, %kw)
// CHECK:         loop.nest (%n_1, %h_1, %w_1) = (0, 0, 0) to (%batch, 13, 1) attributes {bs.columns = 2 : index} {
// CHECK-NOT:       arith.minsi
// CHECK:           {{(%[0-9]+, ){4}%[0-9]+}} = loop.reduce add contract unroll 1 (%kh_1, %kw_1)
// CHECK-NEXT:        simd.load %x[%n_1, %h_1, %col0_1, %c_1, %kh_1, %kw_1] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, (d1 + d4), ((d2 + 8) + d5), d3)>

// A row of more taps than UNROLLED_TAPS = 7 (a 1×9 window) stays a loop, in
// blocks of at most WINDOW_VECTORS = 2 vectors (V = 4 spills the window's
// hoisted loads) and 14 columns (28 accumulators, two weight vectors and a
// spare register).
func.func @wide_window(%x: memref<?x8x64x144xf32>, %wt: memref<1x9x144xf32>, %out: memref<?x8x56x144xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x8x64x144xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 8, 56) {
    simd.loop (%c) = (0) to (144) {
      %acc = loop.reduce add contract (%kh, %kw) = (0, 0) to (1, 9) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = simd.load %x[%n, %h, %w, %c, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1 + d4, d2 + d5, d3)> : memref<?x8x64x144xf32>
        %wv = simd.load %wt[%kh, %kw, %c] : memref<1x9x144xf32>
        %m = simd.mulf %xv, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %c] : memref<?x8x56x144xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @wide_window
// CHECK:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 8, 4) attributes {bs.columns = 2 : index} {
// CHECK:           simd.loop (%c) = (0) to (144) vectors 2 {
// CHECK-NEXT:        {{(%[0-9]+, ){13}%[0-9]+}} = loop.reduce add contract (%kh, %kw)

// 40 output channels fill 3 vectors of 16 lanes, not 4: the lowering carries
// 3 parts, the last as 8 lanes (a fourth vector would be all padding, and its
// FMAs as dear as the others'). V = 3 leaves 28 registers: P = 9 columns at
// most, and 7 waste the fewest for 13. With 8 lanes (AVX2) 40 channels are 5
// vectors: V = 4.
func.func @three_vectors(%x: memref<?x1x13x37xf32>, %wt: memref<1x1x37x40xf32>, %out: memref<?x1x13x40xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x1x13x37xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 1, 13) {
    simd.loop (%o) = (0) to (40) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 37) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4, d2 + d5, d6)> : memref<?x1x13x37xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<1x1x37x40xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %o] : memref<?x1x13x40xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @three_vectors
// CHECK:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 1, 2) attributes {bs.columns = 2 : index} {
// CHECK:           %col6 = arith.minsi
// CHECK-NOT:       %col7
// CHECK:           simd.loop (%o) = (0) to (40) vectors 3 {
// AVX2-LABEL:  func.func @three_vectors
// AVX2:          simd.loop (%o) = (0) to (40) vectors 4 {
// BCAST-LABEL: func.func @three_vectors
// BCAST:         simd.loop (%o) = (0) to (40) vectors 3 {
