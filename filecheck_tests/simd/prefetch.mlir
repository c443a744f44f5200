// RUN: bs-opt %s | filecheck %s
// RUN: bs-opt %s --print-op-generic | bs-opt | filecheck %s
// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=x86-64 cpu=skylake-avx512}' | filecheck %s --check-prefix=LLVM

// simd.prefetch: the lines that a simd.load of the same access would read,
// fetched towards the core (locality 2: L2). Its point may lie past the end
// of the buffer (here channel 16 + 16 of 16): it never faults.
func.func @ahead(%w: memref<4x16x64xf32>, %o: memref<4x64xf32>) attributes {bs.kernel} {
  loop.nest parallel 1 (%i) = (0) to (4) {
    simd.loop (%c) = (0) to (64) vectors 4 {
      simd.prefetch %w[%i, %c] map affine_map<(d0, d1) -> (d0, 16, d1)> locality 2 : memref<4x16x64xf32>
      %v = simd.load %w[%i, %c] map affine_map<(d0, d1) -> (d0, 0, d1)> : memref<4x16x64xf32>
      simd.store %v, %o[%i, %c] : memref<4x64xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @ahead
// CHECK:         simd.prefetch %w[%i, %c] map affine_map<(d0, d1) -> (d0, 16, d1)> locality 2 : memref<4x16x64xf32>
// CHECK-NEXT:    %v = simd.load %w[%i, %c]

// With 4 vectors of 16 lanes a step covers 4 lines of 64 bytes: one
// llvm.prefetch (read: 0, locality 2, data: 1) per line, through a plain (not
// `inbounds`) pointer.
// LLVM-LABEL: llvm.func @ahead_p0
// LLVM-DAG:     %[[RD:.*]] = llvm.mlir.constant(0 : i32) : i32
// LLVM-DAG:     %[[LOC:.*]] = llvm.mlir.constant(2 : i32) : i32
// LLVM-DAG:     %[[DATA:.*]] = llvm.mlir.constant(1 : i32) : i32
// LLVM:         %[[P:.*]] = llvm.getelementptr %{{.*}}[%{{.*}}] : (!llvm.ptr, i64) -> !llvm.ptr, f32
// LLVM-NEXT:    llvm.call_intrinsic "llvm.prefetch.p0"(%[[P]], %[[RD]], %[[LOC]], %[[DATA]]) : (!llvm.ptr, i32, i32, i32) -> ()
// LLVM-NEXT:    %[[P1:.*]] = llvm.getelementptr %[[P]][%{{.*}}] : (!llvm.ptr, i64) -> !llvm.ptr, f32
// LLVM-NEXT:    llvm.call_intrinsic "llvm.prefetch.p0"(%[[P1]], %[[RD]], %[[LOC]], %[[DATA]])
// LLVM-NEXT:    %[[P2:.*]] = llvm.getelementptr %[[P]][%{{.*}}] : (!llvm.ptr, i64) -> !llvm.ptr, f32
// LLVM-NEXT:    llvm.call_intrinsic "llvm.prefetch.p0"(%[[P2]], %[[RD]], %[[LOC]], %[[DATA]])
// LLVM-NEXT:    %[[P3:.*]] = llvm.getelementptr %[[P]][%{{.*}}] : (!llvm.ptr, i64) -> !llvm.ptr, f32
// LLVM-NEXT:    llvm.call_intrinsic "llvm.prefetch.p0"(%[[P3]], %[[RD]], %[[LOC]], %[[DATA]])
// LLVM-NOT:     llvm.call_intrinsic "llvm.prefetch.p0"
// LLVM:         llvm.load %{{.*}} {alignment = 4 : i64} : !llvm.ptr -> vector<64xf32>
