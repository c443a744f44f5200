// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=nvptx cpu=sm_90}' | filecheck %s
// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=nvptx cpu=sm_90}' --target ptx | filecheck %s --check-prefix=PTX
// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=nvptx cpu=sm_90}' --target ptx | filecheck %s --check-prefix=SMEM

// A depth-first tile on the GPU (block mode): ReLU -> max_pool 3x3/2 pad 1,
// tiled by bs-tile-depth-first two output rows at a time with a halo. One
// block runs one tile at a time (tiles grid-strided over ctaid.x); the
// scratch memref.alloca is a static shared array (addrspace 3, one per
// block), reached through its generic address. Every nest of the tile runs
// on all threads of the block: its points times its lanes are flattened and
// strided by the block's thread count. The producer and the pad strips write
// disjoint points of the scratch: one barrier separates them from the pool
// that reads it, and one ends the tile (the next tile overwrites the scratch).
// CHECK:       llvm.mlir.global internal @bs_shared_[[BYTES:[0-9]+]]() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<[[BYTES]] x i8>
// CHECK:       llvm.func @relu_pool_p0(
// CHECK:         %[[SH:.*]] = llvm.mlir.addressof @bs_shared_[[BYTES]] : !llvm.ptr<3>
// CHECK-NEXT:    llvm.call @bs.gpu.generic(%[[SH]]) : (!llvm.ptr<3>) -> !llvm.ptr
// CHECK-NOT:     llvm.alloca
// CHECK:         llvm.call_intrinsic "llvm.nvvm.barrier0"() : () -> ()
// CHECK:         llvm.call_intrinsic "llvm.nvvm.barrier0"() : () -> ()
// CHECK-NOT:     llvm.call_intrinsic "llvm.nvvm.barrier0"
// The kernel info: threads for the block (one per scratch element, a multiple
// of a warp), tiles per batch item (3 channels x 3 row tiles) for the grid.
// CHECK:       loop.kernel_info
// CHECK-SAME:    gpu_launch = #loop.gpu_launch<lanes = [64], tiles = [9], groups = [1], arch = "sm_90">

// PTX:         .visible .entry relu_pool_g0(
// PTX:         .shared .align 16 .b8 bs_shared_[[BYTES:[0-9]+]]{{\[}}[[BYTES]]{{\]}};
// PTX-COUNT-2: bar.sync 0;
// PTX-NOT:     bar.sync
// The accesses to the scratch are shared-memory loads and stores.
// SMEM:        st.shared.b32
// SMEM:        ld.shared.b32
func.func @relu_pool(%x: memref<?x3x9x8xf32>, %out: memref<?x3x5x4xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x3x9x8xf32>
  loop.tile parallel 3 (%tn, %tc, %th) = (0, 0, 0) to (%batch, 3, 5) step (1, 1, 2) {
    %s = memref.alloca() : memref<1x1x5x9xf32>
    %one = arith.constant 1 : index
    %n1 = arith.addi %tn, %one : index
    %nend = arith.minsi %n1, %batch : index
    %c1 = arith.addi %tc, %one : index
    %three = arith.constant 3 : index
    %cend = arith.minsi %c1, %three : index
    %two = arith.constant 2 : index
    %h2 = arith.addi %th, %two : index
    %five = arith.constant 5 : index
    %hend = arith.minsi %h2, %five : index
    %r0 = arith.muli %th, %two : index
    %m1 = arith.constant -1 : index
    %lo = arith.addi %r0, %m1 : index
    %hi = arith.muli %hend, %two : index
    %zero = arith.constant 0 : index
    %ilo = arith.maxsi %lo, %zero : index
    %nine = arith.constant 9 : index
    %ihi = arith.minsi %hi, %nine : index
    // the producer: input rows [2 th - 1, 2 hend) inside the buffer
    loop.nest (%n, %c, %h) = (%tn, %tc, %ilo) to (%nend, %cend, %ihi) {
      simd.loop (%w) = (0) to (8) {
        %v = simd.load %x[%n, %c, %h, %w] : memref<?x3x9x8xf32>
        %z = arith.constant 0.000000e+00 : f32
        %zs = simd.splat %z : f32
        %lt = simd.cmpf "olt" %v, %zs : !simd.vec<f32>
        %r = simd.select %lt, %zs, %v : !simd.vec<f32>
        simd.store %r, %s[%n, %c, %h, %w, %tn, %tc, %th] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> ((d0 + (d4 * -1)), (d1 + (d5 * -1)), ((d2 + (d6 * -2)) + 1), (d3 + 1))> : memref<1x1x5x9xf32>
      }
    }
    // pad strips: rows above and below the buffer, the column left of it
    loop.nest (%n, %c, %h) = (%tn, %tc, %lo) to (%nend, %cend, %ilo) {
      simd.loop (%w) = (-1) to (8) {
        %p = arith.constant 0xff800000 : f32
        %ps = simd.splat %p : f32
        simd.store %ps, %s[%n, %c, %h, %w, %tn, %tc, %th] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> ((d0 + (d4 * -1)), (d1 + (d5 * -1)), ((d2 + (d6 * -2)) + 1), (d3 + 1))> : memref<1x1x5x9xf32>
      }
    }
    loop.nest (%n, %c, %h) = (%tn, %tc, %ihi) to (%nend, %cend, %hi) {
      simd.loop (%w) = (-1) to (8) {
        %p = arith.constant 0xff800000 : f32
        %ps = simd.splat %p : f32
        simd.store %ps, %s[%n, %c, %h, %w, %tn, %tc, %th] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> ((d0 + (d4 * -1)), (d1 + (d5 * -1)), ((d2 + (d6 * -2)) + 1), (d3 + 1))> : memref<1x1x5x9xf32>
      }
    }
    loop.nest (%n, %c, %h) = (%tn, %tc, %ilo) to (%nend, %cend, %ihi) {
      simd.loop (%w) = (-1) to (0) {
        %p = arith.constant 0xff800000 : f32
        %ps = simd.splat %p : f32
        simd.store %ps, %s[%n, %c, %h, %w, %tn, %tc, %th] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> ((d0 + (d4 * -1)), (d1 + (d5 * -1)), ((d2 + (d6 * -2)) + 1), (d3 + 1))> : memref<1x1x5x9xf32>
      }
    }
    // the pool reads the scratch without bounds checks
    loop.nest (%n, %c, %h) = (%tn, %tc, %th) to (%nend, %cend, %hend) {
      simd.loop (%w) = (0) to (4) {
        %mx = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xff800000 : f32 -> !simd.vec<f32> {
          %e = simd.load %s[%n, %c, %h, %w, %kh, %kw, %tn, %tc, %th] map affine_map<(d0, d1, d2, d3, d4, d5, d6, d7, d8) -> ((d0 + (d6 * -1)), (d1 + (d7 * -1)), (((((d2 * 2) + d4) + -1) + (d8 * -2)) + 1), ((d3 * 2) + d5))> : memref<1x1x5x9xf32>
          loop.yield %e : !simd.vec<f32>
        }
        simd.store %mx, %out[%n, %c, %h, %w] : memref<?x3x5x4xf32>
      }
    }
  }
  func.return
}
