// RUN: bs-opt %s -p bs-gpu-unit-tiles | filecheck %s

// bs-gpu-unit-tiles (run by bs-lower-to-llvm{target=nvptx}) cuts a
// depth-first tile whose scratch does not fit in a block's 48 KiB of shared
// memory to one point of its tiled dims: step 1, `iv + 1` for `iv + step`,
// and a scratch of one point in the tiled dims (64 KiB -> 16 KiB here, so the
// tile runs as a block). The nests and their scratch indices stay as they are.

func.func @too_large(%x: memref<?x8x64x64xf32>, %out: memref<?x8x64x64xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x8x64x64xf32>
  loop.tile parallel 2 (%tn, %tc) = (0, 0) to (%batch, 8) step (1, 4) {
    %s = memref.alloca() : memref<1x4x64x64xf32>
    %one = arith.constant 1 : index
    %n1 = arith.addi %tn, %one : index
    %nend = arith.minsi %n1, %batch : index
    %four = arith.constant 4 : index
    %c4 = arith.addi %tc, %four : index
    %eight = arith.constant 8 : index
    %cend = arith.minsi %c4, %eight : index
    loop.nest (%n, %c, %h, %w) = (%tn, %tc, 0, 0) to (%nend, %cend, 64, 64) {
      %v = loop.load %x[%n, %c, %h, %w] : memref<?x8x64x64xf32>
      loop.store %v, %s[%n, %c, %h, %w, %tn, %tc] map affine_map<(d0, d1, d2, d3, d4, d5) -> ((d0 - d4), (d1 - d5), d2, d3)> : f32, memref<1x4x64x64xf32>
    }
    loop.nest (%n, %c, %h, %w) = (%tn, %tc, 0, 0) to (%nend, %cend, 64, 64) {
      %v = loop.load %s[%n, %c, %h, %w, %tn, %tc] map affine_map<(d0, d1, d2, d3, d4, d5) -> ((d0 - d4), (d1 - d5), d2, d3)> : memref<1x4x64x64xf32>
      loop.store %v, %out[%n, %c, %h, %w] : f32, memref<?x8x64x64xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @too_large
// CHECK:         loop.tile parallel 2 (%tn, %tc) = (0, 0) to (%batch, 8) step (1, 1) {
// CHECK-NEXT:      %s = memref.alloca() : memref<1x1x64x64xf32>
// CHECK-NEXT:      %one = arith.constant 1 : index
// CHECK-NEXT:      %[[ONE:[0-9]+]] = arith.constant 1 : index
// CHECK-NEXT:      %n1 = arith.addi %tn, %[[ONE]] : index
// CHECK-NEXT:      %nend = arith.minsi %n1, %batch : index
// CHECK-NEXT:      %four = arith.constant 4 : index
// CHECK-NEXT:      %[[ONE_C:[0-9]+]] = arith.constant 1 : index
// CHECK-NEXT:      %c4 = arith.addi %tc, %[[ONE_C]] : index
// CHECK:           loop.store %v, %s[%n, %c, %h, %w, %tn, %tc] map {{.*}} : f32, memref<1x1x64x64xf32>
// CHECK:           loop.load %s[{{.*}}] map {{.*}} : memref<1x1x64x64xf32>

// A tile whose scratch fits in shared memory is a block as it is.
func.func @fits(%x: memref<?x8x8x8xf32>, %out: memref<?x8x8x8xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x8x8x8xf32>
  loop.tile parallel 2 (%tn, %tc) = (0, 0) to (%batch, 8) step (1, 4) {
    %s = memref.alloca() : memref<1x4x8x8xf32>
    %one = arith.constant 1 : index
    %n1 = arith.addi %tn, %one : index
    %nend = arith.minsi %n1, %batch : index
    %four = arith.constant 4 : index
    %c4 = arith.addi %tc, %four : index
    %eight = arith.constant 8 : index
    %cend = arith.minsi %c4, %eight : index
    loop.nest (%n, %c, %h, %w) = (%tn, %tc, 0, 0) to (%nend, %cend, 8, 8) {
      %v = loop.load %x[%n, %c, %h, %w] : memref<?x8x8x8xf32>
      loop.store %v, %s[%n, %c, %h, %w, %tn, %tc] map affine_map<(d0, d1, d2, d3, d4, d5) -> ((d0 - d4), (d1 - d5), d2, d3)> : f32, memref<1x4x8x8xf32>
    }
    loop.nest (%n, %c, %h, %w) = (%tn, %tc, 0, 0) to (%nend, %cend, 8, 8) {
      %v = loop.load %s[%n, %c, %h, %w, %tn, %tc] map affine_map<(d0, d1, d2, d3, d4, d5) -> ((d0 - d4), (d1 - d5), d2, d3)> : memref<1x4x8x8xf32>
      loop.store %v, %out[%n, %c, %h, %w] : f32, memref<?x8x8x8xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @fits
// CHECK:         loop.tile parallel 2 (%tn, %tc) = (0, 0) to (%batch, 8) step (1, 4) {
// CHECK-NEXT:      %s = memref.alloca() : memref<1x4x8x8xf32>
// CHECK-NEXT:      %one = arith.constant 1 : index
// CHECK-NEXT:      %n1 = arith.addi %tn, %one : index
// CHECK:           %c4 = arith.addi %tc, %four : index
