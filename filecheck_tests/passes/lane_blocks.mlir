// RUN: bs-opt %s -p bs-lane-blocks | filecheck %s
// RUN: bs-opt %s -p 'bs-lane-blocks{lanes=8 max-vectors=2}' | filecheck %s --check-prefix=AVX2

// bs-lane-blocks gives a lane loop whose body reduces across rows (here a
// channels-last global mean over 13x13 pixels) `vectors V`: each step of the
// reduction reads V adjacent vectors of one row. 83 channels hold 4 vectors of
// 16 lanes (64), or 2 of 8 with max-vectors=2.

// CHECK-LABEL: func.func @global_mean
// CHECK:         simd.loop (%c) = (0) to (83) vectors 4 {
// CHECK-NEXT:      loop.reduce add (%kh, %kw) = (0, 0) to (13, 13)
// AVX2-LABEL:  func.func @global_mean
// AVX2:          simd.loop (%c) = (0) to (83) vectors 2 {
func.func @global_mean(%x: memref<?x13x13x83xf32>, %out: memref<?x1x1x83xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x83xf32>
  loop.nest parallel 1 (%n) = (0) to (%batch) {
    simd.loop (%c) = (0) to (83) {
      %s = loop.reduce add (%kh, %kw) = (0, 0) to (13, 13) init 0.0 : f32 -> !simd.vec<f32> {
        %v = simd.load %x[%n, %c, %kh, %kw] map affine_map<(d0, d1, d2, d3) -> (d0, d2, d3, d1)> : memref<?x13x13x83xf32>
        loop.yield %v : !simd.vec<f32>
      }
      %k = arith.constant 169.0 : f32
      %d = simd.splat %k : f32
      %m = simd.divf %s, %d : !simd.vec<f32>
      simd.store %m, %out[%n, %c] map affine_map<(d0, d1) -> (d0, 0, 0, d1)> : memref<?x1x1x83xf32>
    }
  }
  func.return
}

// Left alone: a reduction that gathers across lanes (the lane index is a
// row), a lane extent under two vectors, and a lane loop with no reduction.

// CHECK-LABEL: func.func @gather_across_lanes
// CHECK:         simd.loop (%c) = (0) to (83) {
func.func @gather_across_lanes(%x: memref<?x83x13xf32>, %out: memref<?x83xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x83x13xf32>
  loop.nest parallel 1 (%n) = (0) to (%batch) {
    simd.loop (%c) = (0) to (83) {
      %s = loop.reduce max (%k) = (0) to (13) init 0xFF800000 : f32 -> !simd.vec<f32> {
        %v = simd.load %x[%n, %c, %k] map affine_map<(d0, d1, d2) -> (d0, d1, d2)> : memref<?x83x13xf32>
        loop.yield %v : !simd.vec<f32>
      }
      simd.store %s, %out[%n, %c] : memref<?x83xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @narrow
// CHECK:         simd.loop (%c) = (0) to (24) {
func.func @narrow(%x: memref<?x5x24xf32>, %out: memref<?x24xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x5x24xf32>
  loop.nest parallel 1 (%n) = (0) to (%batch) {
    simd.loop (%c) = (0) to (24) {
      %s = loop.reduce add (%k) = (0) to (5) init 0.0 : f32 -> !simd.vec<f32> {
        %v = simd.load %x[%n, %c, %k] map affine_map<(d0, d1, d2) -> (d0, d2, d1)> : memref<?x5x24xf32>
        loop.yield %v : !simd.vec<f32>
      }
      simd.store %s, %out[%n, %c] : memref<?x24xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @no_reduction
// CHECK:         simd.loop (%c) = (0) to (83) {
func.func @no_reduction(%x: memref<?x83xf32>, %out: memref<?x83xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x83xf32>
  loop.nest parallel 1 (%n) = (0) to (%batch) {
    simd.loop (%c) = (0) to (83) {
      %v = simd.load %x[%n, %c] : memref<?x83xf32>
      simd.store %v, %out[%n, %c] : memref<?x83xf32>
    }
  }
  func.return
}
