// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=x86-64 cpu=skylake-avx512}' | filecheck %s
// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=x86-64 cpu=haswell}' | filecheck %s --check-prefix=AVX2

// A 3x3 stride-2 padded max pool: the lane iv has coefficient 2, so the
// window loads are masked gathers; pad lanes are masked off and read -inf.
// CHECK-LABEL: llvm.func @maxpool_p0
// CHECK:         llvm.icmp "ult" %{{.*}}, %{{.*}} : vector<16xi64>
// CHECK:         llvm.call @bs.gather.v16f32(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) : (!llvm.ptr, vector<16xi64>, vector<16xi1>, vector<16xf32>) -> vector<16xf32>
// The NaN-propagating max step of loop.reduce. The work hint counts the
// window: 3 x 6 x 7 points x 9 taps.
// CHECK:         llvm.call @bs.fmax.v16f32
// CHECK:       loop.kernel_info
// CHECK-SAME:    work = array<i64: 1134>
// AVX2-LABEL:  llvm.func @maxpool_p0
// AVX2-SAME:     target_cpu = "haswell"
// AVX2-NOT:      passthrough
// AVX2:          llvm.call @bs.gather.v8f32
func.func @maxpool(%x: memref<?x3x11x13xf32>, %y: memref<?x3x6x7xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x3x11x13xf32>
  loop.nest parallel 1 (%i, %c, %h) = (0, 0, 0) to (%n, 3, 6) {
    simd.loop (%w) = (0) to (7) {
      %r = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xFF800000 : f32 -> !simd.vec<f32> {
        %v = simd.load %x[%i, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4 - 1, d3 * 2 + d5 - 1)> pad 0xFF800000 : f32 : memref<?x3x11x13xf32>
        loop.yield %v : !simd.vec<f32>
      }
      simd.store %r, %y[%i, %c, %h, %w] : memref<?x3x6x7xf32>
    }
  }
  func.return
}

// A scalar padded window load reads through a select of addresses: the point's,
// or that of a constant cell holding the pad value (bits 0xFF800000, -inf), so
// that a broadcast of the value still folds into the load on x86.
// CHECK-LABEL: llvm.func @spool_p0
// CHECK:         %[[P:.*]] = llvm.getelementptr %{{.*}}[%{{.*}}]
// CHECK-NEXT:    %[[C:.*]] = llvm.call @bs.padcell.ff800000(%[[IN:.*]], %[[P]]) : (i1, !llvm.ptr) -> !llvm.ptr
// CHECK-NEXT:    llvm.load %[[C]] {{.*}}: !llvm.ptr -> f32
// CHECK:         llvm.fcmp "ogt"
// CHECK:         llvm.fcmp "uno"
func.func @spool(%x: memref<1x9x10xf32>, %y: memref<1x5x5xf32>) attributes {bs.kernel} {
  loop.nest parallel 1 (%c, %h, %w) = (0, 0, 0) to (1, 5, 5) {
    %r = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xFF800000 : f32 -> f32 {
      %v = loop.load %x[%c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4) -> (d0, d1 * 2 + d3 - 1, d2 * 2 + d4 - 1)> pad 0xFF800000 : f32 : memref<1x9x10xf32>
      loop.yield %v : f32
    }
    loop.store %r, %y[%c, %h, %w] : f32, memref<1x5x5xf32>
  }
  func.return
}

// A padded convolution's input load (channels last): the channel index is the
// iv of a reduction over 0..6, so an outside pixel selects a row of 6 pad
// values (`bs.padrow.<bits>.<length>`) from the address of the pixel's first
// channel, and the channel offset is added after the select: the select depends
// on the pixel and tap alone, and LLVM hoists it out of the channel loop.
// CHECK-LABEL: llvm.func @conv3x3_p0
// CHECK:         %[[HEAD:.*]] = llvm.getelementptr %{{.*}}[%{{.*}}]
// CHECK-NEXT:    %[[ROW:.*]] = llvm.call @bs.padrow.00000000.6(%{{.*}}, %[[HEAD]]) : (i1, !llvm.ptr) -> !llvm.ptr
// CHECK-NEXT:    %[[PT:.*]] = llvm.getelementptr %[[ROW]][%{{.*}}]
// CHECK-NEXT:    llvm.load %[[PT]] {{.*}}: !llvm.ptr -> f32
func.func @conv3x3(%x: memref<?x7x7x6xf32>, %wt: memref<3x3x6x8xf32>, %out: memref<?x7x7x8xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x7x7x6xf32>
  loop.nest parallel 1 (%i, %h, %w) = (0, 0, 0) to (%n, 7, 7) {
    simd.loop (%o) = (0) to (8) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (3, 3, 6) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%i, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4 - 1, d2 + d5 - 1, d6)> pad 0.0 : f32 : memref<?x7x7x6xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<3x3x6x8xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%i, %h, %w, %o] : memref<?x7x7x8xf32>
    }
  }
  func.return
}

// A padded depthwise window load (channels last): the lanes are channels of
// one pixel, so the point is the same for every lane. The reduction over the
// taps runs in two versions: where its corners (and so the whole window) lie
// inside the image, the loads take no check; else an outside pixel selects a
// row of 16 pad values (one vector) instead of masking each load. The partial
// chunk of 21 channels keeps its lane mask on the selected address.
// CHECK-LABEL: llvm.func @depthwise_p0
// CHECK:         llvm.icmp "ult"
// CHECK:         llvm.and %{{.*}}, %{{.*}} : i1
// CHECK:         llvm.cond_br %{{.*}}, ^[[INTERIOR:bb[0-9]+]], ^[[BORDER:bb[0-9]+]]
// CHECK:       ^[[INTERIOR]]:
// CHECK-NEXT:    llvm.br ^[[INTERIOR_TAPS:bb[0-9]+]](
// CHECK:       ^[[BORDER]]:
// CHECK-NEXT:    llvm.br ^[[BORDER_TAPS:bb[0-9]+]](
// CHECK:       ^[[INTERIOR_TAPS]](
// CHECK-NOT:     padrow
// CHECK:         llvm.load %{{.*}} -> vector<16xf32>
// CHECK-NOT:     padrow
// CHECK:       ^[[BORDER_TAPS]](
// CHECK:         %[[ROW:.*]] = llvm.call @bs.padrow.00000000.16(%{{.*}}, %{{.*}}) : (i1, !llvm.ptr) -> !llvm.ptr
// CHECK-NEXT:    llvm.load %[[ROW]] {{.*}}: !llvm.ptr -> vector<16xf32>
// CHECK:         %[[ROWM:.*]] = llvm.call @bs.padrow.00000000.16
// CHECK-NEXT:    llvm.call_intrinsic "llvm.masked.load.v16f32.p0"(%[[ROWM]],
// CHECK:       loop.kernel_info
// AVX2-LABEL:  llvm.func @depthwise_p0
// AVX2:          llvm.call @bs.padrow.00000000.8
func.func @depthwise(%x: memref<?x5x5x21xf32>, %wt: memref<3x3x1x21xf32>, %out: memref<?x5x5x21xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x5x5x21xf32>
  loop.nest parallel 1 (%i, %h, %w) = (0, 0, 0) to (%n, 5, 5) {
    simd.loop (%c) = (0) to (21) {
      %acc = loop.reduce add contract (%kh, %kw) = (0, 0) to (3, 3) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = simd.load %x[%i, %h, %w, %c, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1 + d4 - 1, d2 + d5 - 1, d3)> pad 0.0 : f32 : memref<?x5x5x21xf32>
        %wv = simd.load %wt[%kh, %kw, %c] map affine_map<(d0, d1, d2) -> (d0, d1, 0, d2)> : memref<3x3x1x21xf32>
        %m = simd.mulf %xv, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%i, %h, %w, %c] : memref<?x5x5x21xf32>
    }
  }
  func.return
}

// A stem's taps sum 3 channels (at most FEW_CHANNELS), so its scalar window
// runs in two versions too: the interior's broadcasts load with no select;
// the border's select a row of 3 pad values. (The 3x3 convolution above,
// whose taps sum 6 channels, keeps one version with its pad rows.)
// CHECK-LABEL: llvm.func @stem_p0
// CHECK:         llvm.icmp "ult"
// CHECK:         llvm.and %{{.*}}, %{{.*}} : i1
// CHECK:         llvm.cond_br %{{.*}}, ^[[INTERIOR:bb[0-9]+]], ^[[BORDER:bb[0-9]+]]
// CHECK:       ^[[INTERIOR]]:
// CHECK-NEXT:    llvm.br ^[[INTERIOR_TAPS:bb[0-9]+]](
// CHECK:       ^[[BORDER]]:
// CHECK-NEXT:    llvm.br ^[[BORDER_TAPS:bb[0-9]+]](
// CHECK:       ^[[INTERIOR_TAPS]](
// CHECK-NOT:     padrow
// CHECK:         llvm.load %{{.*}} -> f32
// CHECK-NOT:     padrow
// CHECK:       ^[[BORDER_TAPS]](
// CHECK:         llvm.call @bs.padrow.00000000.3(
func.func @stem(%x: memref<?x9x9x3xf32>, %wt: memref<3x3x3x8xf32>, %out: memref<?x5x5x8xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x9x9x3xf32>
  loop.nest parallel 1 (%i, %h, %w) = (0, 0, 0) to (%n, 5, 5) {
    simd.loop (%o) = (0) to (8) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (3, 3, 3) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%i, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 * 2 + d4 - 1, d2 * 2 + d5 - 1, d6)> pad 0.0 : f32 : memref<?x9x9x3xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<3x3x3x8xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%i, %h, %w, %o] : memref<?x5x5x8xf32>
    }
  }
  func.return
}
