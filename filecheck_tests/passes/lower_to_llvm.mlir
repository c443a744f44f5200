// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=x86-64 cpu=skylake-avx512}' | filecheck %s

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
// Slot 0: the data pointer of %x, slot 1: its dynamic dim, slot 2: the pointer of %y.
// CHECK:         %[[X:.*]] = llvm.load %[[ARGS]] {alignment = 8 : i64} : !llvm.ptr -> !llvm.ptr
// CHECK:         llvm.getelementptr inbounds %[[ARGS]][%{{.*}}] : (!llvm.ptr, i64) -> !llvm.ptr, i64
// CHECK:         llvm.load %{{.*}} {alignment = 8 : i64} : !llvm.ptr -> i64
// The static split of the collapsed parallel dims over the threads.
// CHECK:         llvm.udiv
// CHECK:         llvm.udiv
// 13 lanes of 16: only the masked tail chunk.
// CHECK:         llvm.call_intrinsic "llvm.masked.load.v16f32.p0"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) : (!llvm.ptr, i32, vector<16xi1>, vector<16xf32>) -> vector<16xf32>
// CHECK:         llvm.fmul %{{.*}}, %{{.*}} : vector<16xf32>
// CHECK:         llvm.intr.masked.store %{{.*}}, %{{.*}}, %{{.*}} {alignment = 4 : i32} : vector<16xf32>, vector<16xi1> into !llvm.ptr
// CHECK:         llvm.return
// CHECK:       loop.kernel_info
// CHECK-SAME:    kernel = "scale", phases = ["scale_p0"], buffers = [memref<?x37x13xf32>, memref<?x37x13xf32>], work = array<i64: 481>, target = "x86-64"
// CHECK-NOT:   bs.kernel
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

// Full chunks are unmasked vector loads/stores, align 4; the tail is masked.
// CHECK-LABEL: llvm.func @wide_p0
// CHECK:         llvm.load %{{.*}} {alignment = 4 : i64} : !llvm.ptr -> vector<16xf32>
// CHECK:         llvm.call @bs.fcmp.ogt.v16f32
// CHECK:         llvm.call @bs.select.v16f32
// CHECK:         llvm.store %{{.*}}, %{{.*}} {alignment = 4 : i64} : vector<16xf32>, !llvm.ptr
// CHECK:         llvm.call_intrinsic "llvm.masked.load.v16f32.p0"
// CHECK:         llvm.intr.masked.store
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
// CHECK-SAME:    bs.num_args = 2 : i64, bs.parallel = array<i64: 1, 0>, bs.scratch_dims = array<i64: 0, 0>
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

// Helpers are declared once, to be defined by the backend.
// CHECK-DAG:   llvm.func @bs.fcmp.ogt.v16f32(vector<16xf32>, vector<16xf32>) -> vector<16xi1>
// CHECK-DAG:   llvm.func @bs.select.v16f32(vector<16xi1>, vector<16xf32>, vector<16xf32>) -> vector<16xf32>
