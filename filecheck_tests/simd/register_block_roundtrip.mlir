// RUN: bs-opt %s | filecheck %s
// RUN: bs-opt %s | bs-opt | filecheck %s
// RUN: bs-opt %s --print-op-generic | bs-opt | filecheck %s

// A register block as bs-register-tile writes it: a simd.loop whose lane values
// span `vectors` machine vectors, and a contracting loop.reduce with one
// accumulator per column.
func.func @block(%x: memref<2x37xf32>, %w: memref<37x53xf32>, %y: memref<2x53xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  simd.loop (%o) = (0) to (53) vectors 4 {
    %a, %b = loop.reduce add contract (%k) = (0) to (37) init 0.0 : f32 -> !simd.vec<f32>, !simd.vec<f32> {
      %x0 = loop.load %x[%c0, %k] : memref<2x37xf32>
      %x1 = loop.load %x[%c1, %k] : memref<2x37xf32>
      %wv = simd.load %w[%k, %o] : memref<37x53xf32>
      %s0 = simd.splat %x0 : f32
      %s1 = simd.splat %x1 : f32
      %m0 = simd.mulf %s0, %wv : !simd.vec<f32>
      %m1 = simd.mulf %s1, %wv : !simd.vec<f32>
      loop.yield %m0, %m1 : !simd.vec<f32>, !simd.vec<f32>
    }
    simd.store %a, %y[%c0, %o] : memref<2x53xf32>
    simd.store %b, %y[%c1, %o] : memref<2x53xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @block
// CHECK:         simd.loop (%o) = (0) to (53) vectors 4 {
// CHECK-NEXT:      %a, %b = loop.reduce add contract (%k) = (0) to (37) init 0.000000e+00 : f32 -> !simd.vec<f32>, !simd.vec<f32> {
// CHECK:             loop.yield %m0, %m1 : !simd.vec<f32>, !simd.vec<f32>
// CHECK:           simd.store %b, %y[%c1, %o] : memref<2x53xf32>
