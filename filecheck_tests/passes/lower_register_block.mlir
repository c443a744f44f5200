// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=x86-64 cpu=skylake-avx512}' | filecheck %s

// A register block on AVX-512 (W = 16): `vectors 2` makes every lane value a
// <32 x float> (two zmm registers once LLVM legalizes it), and each product
// that a contracting reduction yields accumulates with one llvm.fma, one per
// column, instead of a rounded multiply and an add.
func.func @block(%x: memref<2x37xf32>, %w: memref<37x45xf32>, %y: memref<2x45xf32>) attributes {bs.kernel} {
  loop.nest parallel 1 (%i) = (0) to (1) {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    simd.loop (%o) = (0) to (45) vectors 2 {
      %a, %b = loop.reduce add contract (%k) = (0) to (37) init 0.0 : f32 -> !simd.vec<f32>, !simd.vec<f32> {
        %x0 = loop.load %x[%c0, %k] : memref<2x37xf32>
        %x1 = loop.load %x[%c1, %k] : memref<2x37xf32>
        %wv = simd.load %w[%k, %o] : memref<37x45xf32>
        %s0 = simd.splat %x0 : f32
        %s1 = simd.splat %x1 : f32
        %m0 = simd.mulf %s0, %wv : !simd.vec<f32>
        %m1 = simd.mulf %s1, %wv : !simd.vec<f32>
        loop.yield %m0, %m1 : !simd.vec<f32>, !simd.vec<f32>
      }
      simd.store %a, %y[%c0, %o] : memref<2x45xf32>
      simd.store %b, %y[%c1, %o] : memref<2x45xf32>
    }
  }
  func.return
}

// The extent (45) stays in the generic phase's key (a register block's output
// channels): the whole chunks of 32 lanes, then the masked last one of 13.
// CHECK-LABEL: llvm.func @block_p0
// CHECK:         llvm.call_intrinsic "llvm.fma.v32f32"(%{{.*}}, %{{.*}}, %{{.*}}) : (vector<32xf32>, vector<32xf32>, vector<32xf32>) -> vector<32xf32>
// CHECK-NEXT:    llvm.call_intrinsic "llvm.fma.v32f32"
// CHECK:         llvm.call_intrinsic "llvm.masked.load.v32f32.p0"
// CHECK:         llvm.call_intrinsic "llvm.fma.v32f32"
// CHECK-NEXT:    llvm.call_intrinsic "llvm.fma.v32f32"
// CHECK:         llvm.call_intrinsic "llvm.masked.store.v32f32.p0"(%{{.*}}) : (vector<32xf32>, !llvm.ptr, i32, vector<32xi1>) -> ()
// CHECK:         llvm.call_intrinsic "llvm.masked.store.
// CHECK-NOT:     llvm.fadd

// 24 channels in a block of 2 vectors: the last vector has 8 lanes active in
// the only chunk, so its accumulators are <8 x float> (a 256-bit FMA, half the
// cost of a 512-bit one where those take both 256-bit halves), carried apart
// from the first vector's and joined after the sum. The same FMAs in the same
// order: lanes 16-23 of the <32 x float> result.
func.func @narrow_tail(%x: memref<2x37xf32>, %w: memref<37x24xf32>, %y: memref<2x24xf32>) attributes {bs.kernel} {
  loop.nest parallel 1 (%i) = (0) to (1) {
    %c0 = arith.constant 0 : index
    simd.loop (%o) = (0) to (24) vectors 2 {
      %a = loop.reduce add contract (%k) = (0) to (37) init 0.0 : f32 -> !simd.vec<f32> {
        %x0 = loop.load %x[%c0, %k] : memref<2x37xf32>
        %wv = simd.load %w[%k, %o] : memref<37x24xf32>
        %s0 = simd.splat %x0 : f32
        %m0 = simd.mulf %s0, %wv : !simd.vec<f32>
        loop.yield %m0 : !simd.vec<f32>
      }
      simd.store %a, %y[%c0, %o] : memref<2x24xf32>
    }
  }
  func.return
}

// CHECK-LABEL: llvm.func @narrow_tail_p0
// CHECK:         llvm.call_intrinsic "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %{{.*}}) : (vector<16xf32>, vector<16xf32>, vector<16xf32>) -> vector<16xf32>
// CHECK-NEXT:    llvm.call_intrinsic "llvm.fma.v8f32"(%{{.*}}, %{{.*}}, %{{.*}}) : (vector<8xf32>, vector<8xf32>, vector<8xf32>) -> vector<8xf32>
// CHECK-NOT:     llvm.call_intrinsic "llvm.fma
// CHECK:         llvm.shufflevector {{.*}} [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7] : vector<8xf32>
// CHECK:         llvm.masked.store.v32f32.p0
// CHECK:         loop.kernel_info {{{.*}}kernel = "narrow_tail"

// 40 channels in a block of 3 vectors (bs-register-tile's V for 33-48
// channels): two full parts and a last of 8 lanes, widened and joined after
// the sum, then stored 16 lanes at a time.
func.func @narrow_tail3(%x: memref<2x37xf32>, %w: memref<37x40xf32>, %y: memref<2x40xf32>) attributes {bs.kernel} {
  loop.nest parallel 1 (%i) = (0) to (1) {
    %c0 = arith.constant 0 : index
    simd.loop (%o) = (0) to (40) vectors 3 {
      %a = loop.reduce add contract (%k) = (0) to (37) init 0.0 : f32 -> !simd.vec<f32> {
        %x0 = loop.load %x[%c0, %k] : memref<2x37xf32>
        %wv = simd.load %w[%k, %o] : memref<37x40xf32>
        %s0 = simd.splat %x0 : f32
        %m0 = simd.mulf %s0, %wv : !simd.vec<f32>
        loop.yield %m0 : !simd.vec<f32>
      }
      simd.store %a, %y[%c0, %o] : memref<2x40xf32>
    }
  }
  func.return
}

// CHECK-LABEL: llvm.func @narrow_tail3_p0
// CHECK:         llvm.call_intrinsic "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %{{.*}}) : (vector<16xf32>, vector<16xf32>, vector<16xf32>) -> vector<16xf32>
// CHECK-NEXT:    llvm.call_intrinsic "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %{{.*}}) : (vector<16xf32>, vector<16xf32>, vector<16xf32>) -> vector<16xf32>
// CHECK-NEXT:    llvm.call_intrinsic "llvm.fma.v8f32"(%{{.*}}, %{{.*}}, %{{.*}}) : (vector<8xf32>, vector<8xf32>, vector<8xf32>) -> vector<8xf32>
// CHECK-NOT:     llvm.call_intrinsic "llvm.fma
// CHECK:         llvm.shufflevector {{.*}} [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7] : vector<8xf32>
// CHECK:         llvm.masked.store.v16f32.p0
// CHECK:         loop.kernel_info {{{.*}}kernel = "narrow_tail3"

// A block of channels whose upper bound is `lower + 32` (bs-register-tile's
// blocks where they divide the channels) is whole: no masked chunk.
func.func @whole_block(%x: memref<2x37xf32>, %w: memref<37x64xf32>, %y: memref<2x64xf32>) attributes {bs.kernel} {
  loop.nest parallel 1 (%cb) = (0) to (2) {
    %c0 = arith.constant 0 : index
    %c32 = arith.constant 32 : index
    %lo = arith.muli %cb, %c32 : index
    %hi = arith.addi %lo, %c32 : index
    simd.loop (%o) = (%lo) to (%hi) vectors 2 {
      %a = loop.reduce add contract (%k) = (0) to (37) init 0.0 : f32 -> !simd.vec<f32> {
        %x0 = loop.load %x[%c0, %k] : memref<2x37xf32>
        %wv = simd.load %w[%k, %o] : memref<37x64xf32>
        %s0 = simd.splat %x0 : f32
        %m0 = simd.mulf %s0, %wv : !simd.vec<f32>
        loop.yield %m0 : !simd.vec<f32>
      }
      simd.store %a, %y[%c0, %o] : memref<2x64xf32>
    }
  }
  func.return
}

// CHECK-LABEL: llvm.func @whole_block_p0
// CHECK-NOT:     llvm.masked
// CHECK:         llvm.call_intrinsic "llvm.fma.v32f32"
// CHECK-NOT:     llvm.masked
// CHECK-NOT:     llvm.call_intrinsic "llvm.fma.v32f32"
// CHECK:         loop.kernel_info {{{.*}}kernel = "whole_block"

// A register block over a static extent that is a multiple of its chunk
// (64 = 2 vectors x 16 lanes x 2) is keyed `whole` in the generic phase: its
// extent is a parameter, but no masked chunk is emitted.
func.func @whole_static(%x: memref<2x37xf32>, %w: memref<37x64xf32>, %y: memref<2x64xf32>) attributes {bs.kernel} {
  loop.nest parallel 1 (%i) = (0) to (1) {
    %c0 = arith.constant 0 : index
    simd.loop (%o) = (0) to (64) vectors 2 {
      %a = loop.reduce add contract (%k) = (0) to (37) init 0.0 : f32 -> !simd.vec<f32> {
        %x0 = loop.load %x[%c0, %k] : memref<2x37xf32>
        %wv = simd.load %w[%k, %o] : memref<37x64xf32>
        %s0 = simd.splat %x0 : f32
        %m0 = simd.mulf %s0, %wv : !simd.vec<f32>
        loop.yield %m0 : !simd.vec<f32>
      }
      simd.store %a, %y[%c0, %o] : memref<2x64xf32>
    }
  }
  func.return
}

// CHECK-LABEL: llvm.func @whole_static_p0
// CHECK-NOT:     llvm.masked
// CHECK:         llvm.call_intrinsic "llvm.fma.v32f32"
// CHECK-NOT:     llvm.masked
// CHECK-NOT:     llvm.call_intrinsic "llvm.fma.v32f32"
// CHECK:         loop.kernel_info {{{.*}}kernel = "whole_static"

// `unroll 1`: the reduction's dims from %kw on are straight-line code (a
// window's row of taps), one loop over %kh is left; each column still
// accumulates its taps in order, kw = 0, 1, 2, one FMA each.
func.func @row_taps(%x: memref<?x6x6x16xf32>, %wt: memref<3x3x16xf32>, %out: memref<?x4x4x16xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x6x6x16xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 4, 2) {
    %c2 = arith.constant 2 : index
    %c1 = arith.constant 1 : index
    %base = arith.muli %w, %c2 : index
    %col1 = arith.addi %base, %c1 : index
    simd.loop (%c) = (0) to (16) vectors 1 {
      %a0, %a1 = loop.reduce add contract unroll 1 (%kh, %kw) = (0, 0) to (3, 3) init 0.0 : f32 -> !simd.vec<f32>, !simd.vec<f32> {
        %x0 = simd.load %x[%n, %h, %base, %c, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1 + d4, d2 + d5, d3)> : memref<?x6x6x16xf32>
        %x1 = simd.load %x[%n, %h, %col1, %c, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1 + d4, d2 + d5, d3)> : memref<?x6x6x16xf32>
        %wv = simd.load %wt[%kh, %kw, %c] : memref<3x3x16xf32>
        %m0 = simd.mulf %x0, %wv : !simd.vec<f32>
        %m1 = simd.mulf %x1, %wv : !simd.vec<f32>
        loop.yield %m0, %m1 : !simd.vec<f32>, !simd.vec<f32>
      }
      simd.store %a0, %out[%n, %h, %base, %c] : memref<?x4x4x16xf32>
      simd.store %a1, %out[%n, %h, %col1, %c] : memref<?x4x4x16xf32>
    }
  }
  func.return
}

// CHECK-LABEL: llvm.func @row_taps_p0
// CHECK:         ^[[LOOP:bb[0-9]+]](%{{.*}}: i64, %[[A0:.*]]: vector<16xf32>, %[[A1:.*]]: vector<16xf32>):
// CHECK:         %[[S0:.*]] = llvm.call_intrinsic "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %[[A0]])
// CHECK-NEXT:    %[[S1:.*]] = llvm.call_intrinsic "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %[[A1]])
// CHECK-NOT:     llvm.br
// CHECK:         %[[T0:.*]] = llvm.call_intrinsic "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %[[S0]])
// CHECK-NEXT:    %[[T1:.*]] = llvm.call_intrinsic "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %[[S1]])
// CHECK-NOT:     llvm.br
// CHECK:         %[[U0:.*]] = llvm.call_intrinsic "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %[[T0]])
// CHECK-NEXT:    %[[U1:.*]] = llvm.call_intrinsic "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %[[T1]])
// CHECK-NEXT:    %[[NEXT:.*]] = llvm.add
// CHECK-NEXT:    llvm.br ^[[LOOP]](%[[NEXT]], %[[U0]], %[[U1]] : i64, vector<16xf32>, vector<16xf32>)

// A register block's chunk of one row of taps (%r, fixed inside the sum):
// where that row lies above or below the image for every column (`or` of each
// column's check of the indices the sum does not move), the columns would all
// sum the same 0·w products, so one column's sum (one FMA per step, the
// weights still read) stands for both, bit for bit, NaN from a non-finite
// weight included.
func.func @padded_tap_row(%x: memref<?x5x4x16xf32>, %wt: memref<3x3x16x16xf32>, %out: memref<?x5x3x2x16xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x5x4x16xf32>
  loop.nest (%n, %h, %r) = (0, 0, 0) to (%batch, 5, 3) {
    %c1 = arith.constant 1 : index
    simd.loop (%o) = (0) to (16) vectors 1 {
      %a0, %a1 = loop.reduce add contract (%kw, %ci) = (0, 0) to (3, 16) init 0.0 : f32 -> !simd.vec<f32>, !simd.vec<f32> {
        %x0 = loop.load %x[%n, %h, %r, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4) -> (d0, d1 + d2 - 1, d3 - 1, d4)> pad 0.0 : f32 : memref<?x5x4x16xf32>
        %x1 = loop.load %x[%n, %h, %r, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4) -> (d0, d1 + d2 - 1, d3, d4)> pad 0.0 : f32 : memref<?x5x4x16xf32>
        %w = simd.load %wt[%r, %kw, %ci, %o] : memref<3x3x16x16xf32>
        %s0 = simd.splat %x0 : f32
        %s1 = simd.splat %x1 : f32
        %m0 = simd.mulf %s0, %w : !simd.vec<f32>
        %m1 = simd.mulf %s1, %w : !simd.vec<f32>
        loop.yield %m0, %m1 : !simd.vec<f32>, !simd.vec<f32>
      }
      simd.store %a0, %out[%n, %h, %r, %c0, %o] : memref<?x5x3x2x16xf32>
      simd.store %a1, %out[%n, %h, %r, %c1, %o] : memref<?x5x3x2x16xf32>
    }
  }
  func.return
}

// CHECK-LABEL: llvm.func @padded_tap_row_p0
// CHECK:         %[[SOME:.*]] = llvm.or %{{.*}}, %{{.*}} : i1
// CHECK-NEXT:    llvm.cond_br %[[SOME]], ^[[WORK:bb[0-9]+]], ^[[PAD:bb[0-9]+]]
// CHECK:       ^[[WORK]]:
// CHECK-NEXT:    llvm.br ^{{bb[0-9]+}}(%{{.*}}, %[[ZERO:[0-9]+]], %[[ZERO]] : i64, vector<16xf32>, vector<16xf32>)
// CHECK-NEXT:  ^[[PAD]]:
// CHECK-NEXT:    llvm.br ^[[ONE:bb[0-9]+]](%{{.*}}, %[[ZERO]] : i64, vector<16xf32>)
// CHECK-NEXT:  ^[[DONE:bb[0-9]+]](%{{.*}}: vector<16xf32>, %{{.*}}: vector<16xf32>):
// CHECK:       ^[[ONE]](%{{.*}}: i64, %[[SUM:[0-9]+]]: vector<16xf32>):
// CHECK:         llvm.br ^[[DONE]](%[[SUM]], %[[SUM]] : vector<16xf32>, vector<16xf32>)
// CHECK:         %[[STEP:[0-9]+]] = llvm.call_intrinsic "llvm.fma.v16f32"
// CHECK-NOT:     llvm.call_intrinsic "llvm.fma
// CHECK:         llvm.br ^{{bb[0-9]+}}(%{{.*}}, %[[STEP]] : i64, vector<16xf32>)
