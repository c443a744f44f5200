// RUN: bs-opt %s | filecheck %s
// RUN: bs-opt %s --print-op-generic | filecheck %s --check-prefix=GENERIC
// RUN: bs-opt %s --print-op-generic | bs-opt | filecheck %s
// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=x86-64 cpu=skylake-avx512}' | filecheck %s --check-prefix=LLVM

// simd.store with a guard stores nothing where the guard is false: column 1
// of a block of two points, clamped to the last of 37, skips its write.
func.func @clamped(%x: memref<37x40xf32>, %o: memref<37x40xf32>) attributes {bs.kernel} {
  loop.nest parallel 1 (%b) = (0) to (19) {
    %c2 = arith.constant 2 : index
    %c1 = arith.constant 1 : index
    %last = arith.constant 36 : index
    %p0 = arith.muli %b, %c2 : index
    %p1 = arith.addi %p0, %c1 : index
    %col1 = arith.minsi %p1, %last : index
    %inside1 = arith.cmpi sle, %p1, %last : index
    simd.loop (%c) = (0) to (40) {
      %v0 = simd.load %x[%p0, %c] : memref<37x40xf32>
      simd.store %v0, %o[%p0, %c] : memref<37x40xf32>
      %v1 = simd.load %x[%col1, %c] : memref<37x40xf32>
      simd.store %v1, %o[%col1, %c] if %inside1 : memref<37x40xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @clamped
// CHECK:         simd.store %v0, %o[%p0, %c] : memref<37x40xf32>
// CHECK:         simd.store %v1, %o[%col1, %c] if %inside1 : memref<37x40xf32>

// GENERIC:       "simd.store"(%v0, %o, %p0, %c) <{map = {{.*}}, operandSegmentSizes = array<i32: 1, 1, 2, 0>}>
// GENERIC:       "simd.store"(%v1, %o, %col1, %c, %inside1) <{map = {{.*}}, operandSegmentSizes = array<i32: 1, 1, 2, 1>}>

// The unguarded store of the full chunk is a plain store; the guarded one a
// masked store of the guard splatted to every lane; in the last partial
// chunk (8 of 16 lanes) the guard is and-ed with the lane mask.
// LLVM-LABEL: llvm.func @clamped_p0
// LLVM:         llvm.store %{{.*}}, %{{.*}} {alignment = 4 : i64} : vector<16xf32>, !llvm.ptr
// LLVM:         %[[G:.*]] = llvm.shufflevector %{{.*}}, %{{.*}} [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] : vector<16xi1>
// LLVM:         llvm.call_intrinsic "llvm.masked.store.v16f32.p0"(%{{.*}}, %{{.*}}, %{{.*}}, %[[G]])
// LLVM:         %[[M:.*]] = llvm.and %{{.*}}, %{{.*}} : vector<16xi1>
// LLVM:         llvm.call_intrinsic "llvm.masked.store.v16f32.p0"(%{{.*}}, %{{.*}}, %{{.*}}, %[[M]])
