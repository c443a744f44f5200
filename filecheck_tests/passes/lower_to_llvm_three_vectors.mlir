// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=x86-64 cpu=skylake-avx512}' | filecheck %s

// A register block of 3 vectors (48 lanes: no power of two). Its two
// accumulators are carried through the reduction as 3 machine vectors each
// (LLVM legalizes a loop-carried <48 x float> in 128-bit pieces), the body is
// emitted once per vector, and the FMAs go accumulator by accumulator. The
// parts are joined after the loop; a guarded store of the block is 3 masked
// stores of 16 lanes (a <48 x i1> mask also legalizes lane by lane).
// CHECK-LABEL: llvm.func @three_p0
// CHECK:         ^bb{{[0-9]+}}(%{{.*}}: i64, %[[A0:.*]]: vector<16xf32>, %[[A1:.*]]: vector<16xf32>, %[[A2:.*]]: vector<16xf32>, %[[B0:.*]]: vector<16xf32>, %[[B1:.*]]: vector<16xf32>, %[[B2:.*]]: vector<16xf32>):
// CHECK-NOT:     vector<48xf32>
// CHECK:         "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %[[A0]])
// CHECK-NEXT:    "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %[[A1]])
// CHECK-NEXT:    "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %[[A2]])
// CHECK-NEXT:    "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %[[B0]])
// CHECK-NEXT:    "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %[[B1]])
// CHECK-NEXT:    "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %[[B2]])
// CHECK:         %[[A01:.*]] = llvm.shufflevector %[[A0]], %[[A1]] [0, 1, 2, {{.*}}, 31]
// CHECK:         %[[A2W:.*]] = llvm.shufflevector %[[A2]], %[[A2]] [0, 1, {{.*}}, 15, 0, 1, {{.*}}, 15]
// CHECK:         %[[A:.*]] = llvm.shufflevector %[[A01]], %[[A2W]] [0, 1, {{.*}}, 46, 47]
// CHECK:         llvm.store %[[A]], %{{.*}} : vector<48xf32>, !llvm.ptr
// CHECK-COUNT-3: llvm.call_intrinsic "llvm.masked.store.v16f32.p0"
// CHECK-NOT:     masked.store.v48f32
func.func @three(%x: memref<3x7xf32>, %w: memref<7x48xf32>, %y: memref<3x48xf32>) attributes {bs.kernel} {
  loop.nest parallel 1 (%h) = (0) to (2) {
    %c2 = arith.constant 2 : index
    %r0 = arith.muli %h, %c2 : index
    %c1 = arith.constant 1 : index
    %r1 = arith.addi %r0, %c1 : index
    %c2b = arith.constant 2 : index
    %g = arith.cmpi sle, %r1, %c2b : index
    %r1c = arith.minsi %r1, %c2b : index
    simd.loop (%c) = (0) to (48) vectors 3 {
      %a, %b = loop.reduce add contract (%ci) = (0) to (7) init 0.000000e+00 : f32 -> !simd.vec<f32>, !simd.vec<f32> {
        %u = loop.load %x[%r0, %ci] : memref<3x7xf32>
        %v = loop.load %x[%r1c, %ci] : memref<3x7xf32>
        %wv = simd.load %w[%ci, %c] : memref<7x48xf32>
        %us = simd.splat %u : f32
        %vs = simd.splat %v : f32
        %p = simd.mulf %us, %wv : !simd.vec<f32>
        %q = simd.mulf %vs, %wv : !simd.vec<f32>
        loop.yield %p, %q : !simd.vec<f32>, !simd.vec<f32>
      }
      simd.store %a, %y[%r0, %c] : memref<3x48xf32>
      simd.store %b, %y[%r1c, %c] if %g : memref<3x48xf32>
    }
  }
  func.return
}
