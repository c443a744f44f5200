// RUN: bs-opt %s -p 'bs-register-tile{broadcast-operands=true},bs-block-reduction{cache=16384}' | filecheck %s

// bs-block-reduction splits a register-blocked channel sum whose weights
// exceed `cache` bytes per block of output channels (here 192 channels x 64
// lanes x 4 bytes = 48 KiB) into chunks that fit: 3 chunks of 64 channels
// (16 KiB). The nest over rows and column blocks becomes a nest over bands of
// rows (29 rows in 8 bands of 4, for 8 parallel units with a batch of one; the
// last band clamps to row 28), each with a buffer of partial sums and three
// sequential nests: zeros in the buffer, each chunk but the last adds its own
// sum (from zero) to the buffer, the last adds its sum and runs the epilogue.
// bs-register-tile blocks such a sum as any other: the 13x13 points in 29
// rows of one block of 6 (`register_tile.mlir` @across_rows).
func.func @conv1x1(%x: memref<?x13x13x192xf32>, %wt: memref<1x1x192x64xf32>, %b: memref<64xf32>, %out: memref<?x13x13x64xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x192xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 13) {
    simd.loop (%o) = (0) to (64) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 192) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4, d2 + d5, d6)> : memref<?x13x13x192xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<1x1x192x64xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      %bv = simd.load %b[%o] : memref<64xf32>
      %y = simd.addf %acc, %bv : !simd.vec<f32>
      simd.store %y, %out[%n, %h, %w, %o] : memref<?x13x13x64xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @conv1x1
// CHECK:         loop.nest (%n, %band) = (0, 0) to (%batch, 8) {
// CHECK-NEXT:      %partial = memref.alloca() {alignment = 64 : i64} : memref<4x1x6x64xf32>
// CHECK-NEXT:      loop.nest (%r, %cols, %col) = (0, 0, 0) to (4, 1, 6) {
// CHECK-NEXT:        simd.loop (%lane) = (0) to (64) vectors 4 {
// CHECK:               simd.store %{{.*}}, %partial[%r, %cols, %col, %lane]
// CHECK:           loop.nest (%chunk, %r_1, %w) = (0, 0, 0) to (2, 4, 1) {
// CHECK:             %h = arith.minsi %{{.*}}, %{{.*}} : index
// CHECK:             simd.loop (%o) = (0) to (64) vectors 4 {
// CHECK-NEXT:          %[[S0:.*]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 64) init 0.000000e+00 : f32
// CHECK-NEXT:            loop.load %x[%n, %row0, %col0, %o, %kh, %kw, %ci, %chunk] map affine_map<(d0, d1, d2, d3, d4, d5, d6, d7) -> (d0, (d1 + d4), (d2 + d5), (d6 + (d7 * 64)))>
// Each step of a chunk but the last prefetches into L2 the weights that the
// same step of the next chunk reads (64 channels on).
// CHECK:                 simd.prefetch %wt[%kh, %kw, %ci, %o, %chunk] map affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, ((d2 + 64) + (d4 * 64)), d3)> locality 2
// CHECK-NEXT:            simd.load %wt[%kh, %kw, %ci, %o, %chunk] map affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, (d2 + (d4 * 64)), d3)>
// CHECK:               %[[P0:.*]] = simd.load %partial[%r_1, %w, %o] map affine_map<(d0, d1, d2) -> (d0, d1, 0, d2)>
// CHECK-NEXT:          %[[T0:.*]] = simd.addf %[[P0]], %[[S0]]
// CHECK:               simd.store %[[T0]], %partial[%r_1, %w, %o] map affine_map<(d0, d1, d2) -> (d0, d1, 0, d2)>
// CHECK-NOT:           simd.store {{.*}} %out
// The last chunk prefetches nothing.
// CHECK:           loop.nest (%r_2, %w_1) = (0, 0) to (4, 1) {
// CHECK-NOT:         simd.prefetch
// CHECK:             simd.loop (%o_1) = (0) to (64) vectors 4 {
// CHECK-NEXT:          %[[L0:.*]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = loop.reduce add contract
// CHECK-NEXT:            loop.load %x[{{.*}}] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, (d1 + d4), (d2 + d5), (d6 + 128))>
// CHECK:               %[[Q0:.*]] = simd.load %partial[%r_2, %w_1, %o_1]
// CHECK-NEXT:          %[[U0:.*]] = simd.addf %[[Q0]], %[[L0]]
// CHECK:               %bv = simd.load %b[%o_1]
// CHECK-NEXT:          %y = simd.addf %[[U0]], %bv
// CHECK:               simd.store %y, %out[%n, %row0_1, %col0_1, %o_1]

// Chunks need not divide the channels: 160 channels (40 KiB) sum in chunks of
// 64, as 192 do, and the last chunk takes the 32 left, from channel 128.
func.func @rest(%x: memref<?x13x13x160xf32>, %wt: memref<1x1x160x64xf32>, %out: memref<?x13x13x64xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x160xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 13) {
    simd.loop (%o) = (0) to (64) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 160) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4, d2 + d5, d6)> : memref<?x13x13x160xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<1x1x160x64xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %o] : memref<?x13x13x64xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @rest
// CHECK:           loop.nest (%chunk, %r_1, %w) = (0, 0, 0) to (2, 4, 1) {
// CHECK:               loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 64)
// CHECK-NEXT:            loop.load %x[%n, %row0, %col0, %o, %kh, %kw, %ci, %chunk] map affine_map<(d0, d1, d2, d3, d4, d5, d6, d7) -> (d0, (d1 + d4), (d2 + d5), (d6 + (d7 * 64)))>
// CHECK:           loop.nest (%r_2, %w_1) = (0, 0) to (4, 1) {
// CHECK:               loop.reduce add contract (%{{.*}}, %{{.*}}, %{{.*}}) = (0, 0, 0) to (1, 1, 32)
// CHECK-NEXT:            loop.load %x[{{.*}}] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, (d1 + d4), (d2 + d5), (d6 + 128))>
// CHECK:                 simd.load %wt[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (d0, d1, (d2 + 128), d3)>
// CHECK:               simd.store %{{.*}}, %out[%n, %row0_1, %col0_1, %o_1]

// Weights that fit the cache (64 channels: 16 KiB) stay one sum, in register
// blocks of 6 points across rows.
func.func @small(%x: memref<?x13x13x64xf32>, %wt: memref<1x1x64x64xf32>, %out: memref<?x13x13x64xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x64xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 13) {
    simd.loop (%o) = (0) to (64) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 64) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4, d2 + d5, d6)> : memref<?x13x13x64xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<1x1x64x64xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %o] : memref<?x13x13x64xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @small
// CHECK:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 29, 1) attributes {bs.columns = 2 : index} {
// CHECK-NOT:     memref.alloca
// CHECK:         %col5
// CHECK-NOT:     loop.nest

// Each block of 64 output channels has 16 KiB of weights (they fit), all four
// have 64 KiB: the sum stays whole (no buffer), and the blocks go outside the
// column blocks of a band, so that a block's weights stay in the cache for it.
func.func @blocks(%x: memref<?x13x13x64xf32>, %wt: memref<4x1x1x64x64xf32>, %out: memref<?x13x13x256xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x64xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 13) {
    simd.loop (%o) = (0) to (256) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 64) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4, d2 + d5, d6)> : memref<?x13x13x64xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d3 floordiv 64, d0, d1, d2, d3 mod 64)> : memref<4x1x1x64x64xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %o] : memref<?x13x13x256xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @blocks
// CHECK:         loop.nest (%n, %band, %cb) = (0, 0, 0) to (%batch, 2, 4) {
// CHECK-NOT:       memref.alloca
// CHECK-NEXT:      loop.nest (%r, %w) = (0, 0) to (15, 1) {
// CHECK:             simd.loop (%o) = (%{{.*}}) to (%{{.*}}) vectors 4 {
// CHECK-NEXT:          loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 64)
// CHECK:               simd.load %wt[%kh, %kw, %ci, %o, %cb]
// CHECK:             simd.store %{{.*}}, %out[%n, %row0, %col0, %o]
// CHECK-NOT:       loop.nest

// A 3x3 sum is chunked by rows of taps (3 x 48 channels), without
// prefetches: each step already reads four lines of weights for its FMAs, and
// four prefetches more slowed such kernels by 4-10% where the weights were
// cached.
func.func @conv3x3(%x: memref<?x13x13x48xf32>, %wt: memref<3x3x48x64xf32>, %out: memref<?x11x11x64xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x48xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 11, 11) {
    simd.loop (%o) = (0) to (64) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (3, 3, 48) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4, d2 + d5, d6)> : memref<?x13x13x48xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<3x3x48x64xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %o] : memref<?x11x11x64xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @conv3x3
// CHECK:           loop.nest (%chunk, %{{.*}}, %{{.*}}) = (0, 0, 0) to (2,
// CHECK:               loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 3, 48)
// CHECK-NOT:           simd.prefetch
// CHECK:           func.return

// A grouped 3x3 convolution (2 groups of 48 -> 32 channels) reads its input
// channel `cb * 48 + ci` once bs-register-tile has blocked it by group: an
// offset plus the sum's last iv, chunked as without groups (the offset stays,
// the chunk's row of taps adds to `kh`).
func.func @grouped3x3(%x: memref<?x13x13x96xf32>, %wt: memref<3x3x48x64xf32>, %out: memref<?x11x11x64xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x96xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 11, 11) {
    simd.loop (%o) = (0) to (64) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (3, 3, 48) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = simd.load %x[%n, %o, %h, %w, %ci, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d2 + d5, d3 + d6, (d1 floordiv 32) * 48 + d4)> : memref<?x13x13x96xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<3x3x48x64xf32>
        %m = simd.mulf %xv, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %o] : memref<?x11x11x64xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @grouped3x3
// CHECK:           loop.nest (%chunk, %{{.*}}, %{{.*}}) = (0, 0, 0) to (2,
// CHECK:               loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 3, 48)
// CHECK-NEXT:            loop.load %x[{{.*}}, %cb, %chunk] map affine_map<{{.*}} -> (d0, (d2 + (d5 + d8)), (d3 + d6), ((d7 * 48) + d4))>
// CHECK:           func.return

// A 3x3 sum over 192 channels takes chunks of one row of taps and 96 channels
// (288 products; 96 is the largest divisor of 192 with at most 384), six in
// all. Chunk k reads the taps' row k floordiv 2 and channels (k mod 2) * 96
// on; the last reads row 2 and channels 96 on. Each step of a chunk then runs
// over 96 channels of one tap, where chunks of 16 channels of all nine taps
// set up a tap (its input rows and padding) every 16 steps.
func.func @tap_rows(%x: memref<?x13x13x192xf32>, %wt: memref<3x3x192x64xf32>, %out: memref<?x13x13x64xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x192xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 13) {
    simd.loop (%o) = (0) to (64) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (3, 3, 192) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4 - 1, d2 + d5 - 1, d6)> pad 0.0 : f32 : memref<?x13x13x192xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<3x3x192x64xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %o] : memref<?x13x13x64xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @tap_rows
// CHECK:           loop.nest (%chunk, %r_1, %w) = (0, 0, 0) to (5, 2, 2) {
// CHECK:               loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 3, 96)
// CHECK-NEXT:            loop.load %x[%n, %h, %col0, %o, %kh, %kw, %ci, %chunk] map affine_map<(d0, d1, d2, d3, d4, d5, d6, d7) -> (d0, ((d1 + (d4 + (d7 floordiv 2))) + -1), ((d2 + d5) + -1), (d6 + ((d7 mod 2) * 96)))>
// CHECK:                 simd.load %wt[%kh, %kw, %ci, %o, %chunk] map affine_map<(d0, d1, d2, d3, d4) -> ((d0 + (d4 floordiv 2)), d1, (d2 + ((d4 mod 2) * 96)), d3)>
// CHECK:               simd.store %{{.*}}, %partial[%r_1, %w, %o]
// CHECK:           loop.nest (%r_2, %w_1) = (0, 0) to (2, 2) {
// CHECK:               loop.reduce add contract (%{{.*}}, %{{.*}}, %{{.*}}) = (0, 0, 0) to (1, 3, 96)
// CHECK-NEXT:            loop.load %x[{{.*}}] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, ((d1 + (d4 + 2)) + -1), ((d2 + d5) + -1), (d6 + 96))>
// CHECK:                 simd.load %wt[{{.*}}] map affine_map<(d0, d1, d2, d3) -> ((d0 + 2), d1, (d2 + 96), d3)>
// CHECK:               simd.store %{{.*}}, %out[%n, %h_1, %col0_1, %o_1]
