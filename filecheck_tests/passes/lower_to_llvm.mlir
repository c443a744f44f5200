// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=x86-64 cpu=skylake-avx512}' | filecheck %s
// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=x86-64 cpu=skylake-avx512 generic=false}' | filecheck %s --check-prefix=EXACT

// Graph functions and their launches stay as they are.
// CHECK-LABEL: func.func @graph
// CHECK:         loop.launch @scale
func.func @graph(%a: tensor<?x37x13xf32>) -> tensor<?x37x13xf32> {
  %r = loop.launch @scale(%a) : (tensor<?x37x13xf32>) -> tensor<?x37x13xf32>
  func.return %r : tensor<?x37x13xf32>
}

// One llvm.func per phase: void (i64 tid, i64 nthreads, ptr args).
// CHECK:       llvm.func @scale_p0(%{{.*}}: i64, %{{.*}}: i64, %[[ARGS:.*]]: !llvm.ptr)
// CHECK-SAME:    target_cpu = "skylake-avx512"
// CHECK-SAME:    passthrough = {{\[}}["min-legal-vector-width", "512"], ["prefer-vector-width", "512"]]
// The phase is generic over extents. args[0] says where, relative to args, the
// data pointer of %x is (the kernel's buffer slot 0), args[1] where its dynamic
// dim is, then the same for %y; then come the parameters 37 and 13.
// CHECK:         %[[R:.*]] = llvm.load %[[ARGS]] {alignment = 8 : i64} : !llvm.ptr -> i64
// CHECK-NEXT:    %[[P:.*]] = llvm.getelementptr inbounds %[[ARGS]][%[[R]]] : (!llvm.ptr, i64) -> !llvm.ptr, i64
// CHECK-NEXT:    %[[X:.*]] = llvm.load %[[P]] {alignment = 8 : i64} : !llvm.ptr -> !llvm.ptr
// CHECK:         llvm.getelementptr inbounds %[[ARGS]][%{{.*}}] : (!llvm.ptr, i64) -> !llvm.ptr, i64
// CHECK:         llvm.load %{{.*}} {alignment = 8 : i64} : !llvm.ptr -> i64
// The static split of the collapsed parallel dims over the threads, in runs
// along the innermost parallel dim.
// CHECK:         llvm.udiv
// CHECK:         llvm.udiv
// CHECK:         llvm.urem
// The lane loop's extent is a parameter: full chunks, then the masked tail.
// CHECK:         llvm.load %{{.*}} {alignment = 4 : i64} : !llvm.ptr -> vector<16xf32>
// CHECK:         llvm.call_intrinsic "llvm.masked.load.v16f32.p0"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) : (!llvm.ptr, i32, vector<16xi1>, vector<16xf32>) -> vector<16xf32>
// CHECK:         llvm.fmul %{{.*}}, %{{.*}} : vector<16xf32>
// CHECK:         llvm.call_intrinsic "llvm.masked.store.v16f32.p0"(%{{.*}}) : (vector<16xf32>, !llvm.ptr, i32, vector<16xi1>) -> ()
// The runner's slots: 4 buffer slots (pointer and batch of %x and %y), then
// the phase's block at slot 4: references to them (-4, -3, -2, -1), then the
// parameters (37 and 13; equal numbers share one).
// CHECK:       loop.kernel_info
// CHECK-SAME:    kernel = "scale", phases = ["scale_p0"], buffers = [memref<?x37x13xf32>, memref<?x37x13xf32>], work = array<i64: 481>, phase_args = array<i64: 4>, slots = array<i64: 0, 0, 0, 0, -4, -3, -2, -1, 37, 13>, target = "x86-64"
// CHECK-NOT:   bs.kernel
// Without generic phases the extents are built in: slot 0 is the pointer of
// %x, 13 lanes of 16 need only the masked tail chunk.
// EXACT:       llvm.func @scale_p0(%{{.*}}: i64, %{{.*}}: i64, %[[ARGS:.*]]: !llvm.ptr)
// EXACT:         %[[X:.*]] = llvm.load %[[ARGS]] {alignment = 8 : i64} : !llvm.ptr -> !llvm.ptr
// EXACT-NOT:     llvm.load %{{.*}} {alignment = 4 : i64} : !llvm.ptr -> vector<16xf32>
// EXACT:         llvm.call_intrinsic "llvm.masked.load.v16f32.p0"
// EXACT:       loop.kernel_info
// EXACT-SAME:    kernel = "scale", phases = ["scale_p0"], buffers = [memref<?x37x13xf32>, memref<?x37x13xf32>], work = array<i64: 481>, target = "x86-64"
// EXACT-NOT:     phase_args
func.func @scale(%x: memref<?x37x13xf32>, %y: memref<?x37x13xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x37x13xf32>
  %two = arith.constant 2.0 : f32
  loop.nest parallel 2 (%i, %c) = (0, 0) to (%n, 37) {
    %t = simd.splat %two : f32
    simd.loop (%w) = (0) to (13) {
      %v = simd.load %x[%i, %c, %w] : memref<?x37x13xf32>
      %r = simd.mulf %v, %t : !simd.vec<f32>
      simd.store %r, %y[%i, %c, %w] : memref<?x37x13xf32>
    }
  }
  func.return
}

// simd.fma is LLVM's fused multiply-add, rounded once.
// CHECK-LABEL: llvm.func @fma_p0
// CHECK:         llvm.call_intrinsic "llvm.fma.v16f32"(%{{.*}}, %{{.*}}, %{{.*}}) : (vector<16xf32>, vector<16xf32>, vector<16xf32>) -> vector<16xf32>
func.func @fma(%x: memref<?x37x13xf32>, %y: memref<?x37x13xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x37x13xf32>
  %two = arith.constant 2.0 : f32
  loop.nest parallel 2 (%i, %c) = (0, 0) to (%n, 37) {
    %t = simd.splat %two : f32
    simd.loop (%w) = (0) to (13) {
      %v = simd.load %x[%i, %c, %w] : memref<?x37x13xf32>
      %r = simd.fma %v, %t, %v : !simd.vec<f32>
      simd.store %r, %y[%i, %c, %w] : memref<?x37x13xf32>
    }
  }
  func.return
}

// Full chunks are unmasked vector loads/stores, align 4; the tail is masked.
// CHECK-LABEL: llvm.func @wide_p0
// CHECK:         llvm.load %{{.*}} {alignment = 4 : i64} : !llvm.ptr -> vector<16xf32>
// CHECK:         llvm.call @bs.fcmp.ogt.v16f32
// CHECK:         llvm.call @bs.select.v16f32
// CHECK:         llvm.store %{{.*}}, %{{.*}} {alignment = 4 : i64} : vector<16xf32>, !llvm.ptr
// CHECK:         llvm.call_intrinsic "llvm.masked.load.v16f32.p0"
// CHECK:         llvm.call_intrinsic "llvm.masked.store.
func.func @wide(%x: memref<8x50xf32>, %y: memref<8x50xf32>) attributes {bs.kernel} {
  %z = arith.constant 0.0 : f32
  loop.nest parallel 1 (%i) = (0) to (8) {
    %zv = simd.splat %z : f32
    simd.loop (%w) = (0) to (50) {
      %v = simd.load %x[%i, %w] : memref<8x50xf32>
      %m = simd.cmpf "ogt" %v, %zv : !simd.vec<f32>
      %r = simd.select %m, %v, %zv : !simd.vec<f32>
      simd.store %r, %y[%i, %w] : memref<8x50xf32>
    }
  }
  func.return
}

// Two phases, a scratch buffer (an ABI buffer after the arguments), a phase
// without parallel dims (run by thread 0 only).
// CHECK-LABEL: llvm.func @two_p0
// CHECK-LABEL: llvm.func @two_p1
// CHECK:         llvm.icmp "eq"
// CHECK:       loop.kernel_info
// CHECK-SAME:    num_args = 2 : i64, parallel = array<i64: 1, 0>, scratch_dims = array<i64: 0, 0>
// CHECK-SAME:    phases = ["two_p0", "two_p1"], buffers = [memref<?x11xf32>, memref<?x11xf32>, memref<?x11xf32>], work = array<i64: 11, 11>
func.func @two(%x: memref<?x11xf32>, %y: memref<?x11xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x11xf32>
  %t = memref.alloc(%n) : memref<?x11xf32>
  loop.nest parallel 1 (%i, %w) = (0, 0) to (%n, 11) {
    %v = loop.load %x[%i, %w] : memref<?x11xf32>
    %e = math.exp %v : f32
    loop.store %e, %t[%i, %w] : f32, memref<?x11xf32>
  }
  loop.nest (%i, %w) = (0, 0) to (%n, 11) {
    %v = loop.load %t[%i, %w] : memref<?x11xf32>
    loop.store %v, %y[%i, %w] : f32, memref<?x11xf32>
  }
  func.return
}

// Kernels share generic phases. @shift's first phase reads a channel range of
// %x in place (a cat operand) through a map offset, which is a parameter like
// the extents; its second phase has the structure of @scale's (other extents)
// and calls @scale_p0. @shift2 has the structure of @shift's first phase (the
// same parameters are equal) and calls @shift_p0.
// CHECK-LABEL: llvm.func @shift_p0
// CHECK-NOT:   llvm.func @shift_p1
// CHECK:       loop.kernel_info
// CHECK-SAME:    kernel = "shift", phases = ["shift_p0", "scale_p0"]
// CHECK-SAME:    phase_args = array<i64: 4, 13>, slots = array<i64: 0, 0, 0, 0, -4, -3, -2, -1, 5, 9, 17, -5, 22, -13, -12, -11, -10, 22, 17>
// CHECK-NOT:   llvm.func @shift2_p
// CHECK:       loop.kernel_info
// CHECK-SAME:    kernel = "shift2", phases = ["shift_p0"]
// CHECK-SAME:    phase_args = array<i64: 4>, slots = array<i64: 0, 0, 0, 0, -4, -3, -2, -1, 32, 48, 3, -32, 64>
func.func @shift(%x: memref<?x22x17xf32>, %y: memref<?x22x17xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x22x17xf32>
  %two = arith.constant 2.0 : f32
  loop.nest parallel 2 (%i, %c) = (0, 5) to (%n, 9) {
    %t = simd.splat %two : f32
    simd.loop (%w) = (0) to (17) {
      %v = simd.load %x[%i, %c, %w] map affine_map<(d0, d1, d2) -> (d0, d1 - 5, d2)> : memref<?x22x17xf32>
      %r = simd.mulf %v, %t : !simd.vec<f32>
      simd.store %r, %y[%i, %c, %w] : memref<?x22x17xf32>
    }
  }
  loop.nest parallel 2 (%i, %c) = (0, 0) to (%n, 22) {
    %t = simd.splat %two : f32
    simd.loop (%w) = (0) to (17) {
      %v = simd.load %x[%i, %c, %w] : memref<?x22x17xf32>
      %r = simd.mulf %v, %t : !simd.vec<f32>
      simd.store %r, %y[%i, %c, %w] : memref<?x22x17xf32>
    }
  }
  func.return
}
func.func @shift2(%x: memref<?x64x3xf32>, %y: memref<?x64x3xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %x, %c0 : memref<?x64x3xf32>
  %two = arith.constant 2.0 : f32
  loop.nest parallel 2 (%i, %c) = (0, 32) to (%n, 48) {
    %t = simd.splat %two : f32
    simd.loop (%w) = (0) to (3) {
      %v = simd.load %x[%i, %c, %w] map affine_map<(d0, d1, d2) -> (d0, d1 - 32, d2)> : memref<?x64x3xf32>
      %r = simd.mulf %v, %t : !simd.vec<f32>
      simd.store %r, %y[%i, %c, %w] : memref<?x64x3xf32>
    }
  }
  func.return
}

// Helpers are declared once, to be defined by the backend.
// CHECK-DAG:   llvm.func @bs.fcmp.ogt.v16f32(vector<16xf32>, vector<16xf32>) -> vector<16xi1>
// CHECK-DAG:   llvm.func @bs.select.v16f32(vector<16xi1>, vector<16xf32>, vector<16xf32>) -> vector<16xf32>
