// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=nvptx cpu=sm_90}' | filecheck %s
// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=nvptx cpu=sm_90}' --target ptx | filecheck %s --check-prefix=PTX

// The nvptx lowering: a lane of the simd.loop is a thread of the block
// (tid.x, block-strided by ntid.x). The flat rows of the parallel dims (%i, %c)
// are split into one chunk per block (ctaid.x of nctaid.x); the block's row
// threads (tid.y) take rows tid.y, tid.y + ntid.y, ... of it. The ivs of the
// first row come from a division, later rows step them like an odometer
// (adding the digits of ntid.y, one carry per dim). Values are scalars: a
// lane's vector is its thread's element.
// CHECK:       llvm.func @scale_p0(%{{.*}}: i64, %{{.*}}: i64, %[[ARGS:.*]]: !llvm.ptr)
// CHECK-DAG:     llvm.call_intrinsic "llvm.nvvm.read.ptx.sreg.tid.y"() : () -> i32
// CHECK-DAG:     llvm.call_intrinsic "llvm.nvvm.read.ptx.sreg.ntid.y"() : () -> i32
// CHECK-DAG:     llvm.call_intrinsic "llvm.nvvm.read.ptx.sreg.ctaid.x"() : () -> i32
// CHECK-DAG:     llvm.call_intrinsic "llvm.nvvm.read.ptx.sreg.nctaid.x"() : () -> i32
// CHECK-DAG:     llvm.call_intrinsic "llvm.nvvm.read.ptx.sreg.tid.x"() : () -> i32
// CHECK-DAG:     llvm.call_intrinsic "llvm.nvvm.read.ptx.sreg.ntid.x"() : () -> i32
// CHECK:         %[[START:.*]] = llvm.udiv %{{.*}}, %[[NB:.*]] : i64
// CHECK:         %[[END:.*]] = llvm.udiv %{{.*}}, %[[NB]] : i64
// CHECK:         %[[F0:.*]] = llvm.add %[[START]], %{{.*}} : i64
// CHECK:         llvm.icmp "ult" %[[F0]], %[[END]] : i64
// CHECK:         llvm.urem
// CHECK:         llvm.udiv
// CHECK:       ^bb{{.*}}(%[[F:.*]]: i64, %[[I:.*]]: i64, %[[C:.*]]: i64):
// CHECK-NEXT:    llvm.icmp "ult" %[[F]], %[[END]] : i64
// CHECK:         llvm.load %{{.*}} {alignment = 4 : i64} : !llvm.ptr -> f32
// CHECK-NEXT:    llvm.fmul %{{.*}}, %{{.*}} : f32
// CHECK-NOT:     vector<
// CHECK:         %[[WRAP:.*]] = llvm.icmp "uge"
// CHECK:         llvm.select %[[WRAP]]
// CHECK-NOT:     llvm.udiv
// The kernel info's launch shape carries each phase's static lane extent for
// the launch, its tiles per batch item in block mode (0: not a tile; see
// lower_to_ptx_tile.mlir), how many consecutive phases each launch runs, and
// the architecture.
// CHECK:       loop.kernel_info
// CHECK-SAME:    gpu_launch = #loop.gpu_launch<lanes = [13], tiles = [0], groups = [1], arch = "sm_90">
// CHECK-SAME:    kernel = "scale", phases = ["scale_p0"]
// CHECK-SAME:    target = "nvptx"

// Each launch is a kernel entry `<kernel>_g<j>` that calls its phases (here
// one, inlined); PTX is forward compatible from sm_80.
// PTX:         .target sm_80
// PTX:         .visible .entry scale_g0(
// PTX-DAG:     mov.u32 {{.*}}%ctaid.x;
// PTX-DAG:     mov.u32 {{.*}}%tid.x;
// LLVM turns x * 2 into x + x (exact); the predicate of the tail is the loop test.
// PTX:         ld.b32 [[X:%r[0-9]+]]
// PTX-NEXT:    add.rn.f32 [[Y:%r[0-9]+]], [[X]], [[X]];
// PTX:         st.b32 [{{.*}}], [[Y]];
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
