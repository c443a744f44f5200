// RUN: bs-opt %s -p 'bs-register-tile{broadcast-operands=true}' | filecheck %s

// A 1x1 convolution inside a depth-first tile of 7 rows of 28 columns (its
// prologue wrote the tile's input): the rows' bounds are the tile's. 6 columns
// fit no row of 28 (30 for 28), but the tile's 196 points taken row-major fit
// 33 blocks of 6 (198): the nest runs over the blocks of the tile's points,
// ceil((rows' end - start) * 28 / 6) of them, each column with its own row and
// column, the last ones clamped to the tile's last point.
func.func @tile_rows(%x: memref<?x28x28x37xf32>, %wt: memref<1x1x37x64xf32>, %out: memref<?x28x28x64xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x28x28x37xf32>
  loop.tile (%tn, %th) = (0, 0) to (%batch, 28) step (1, 7) {
    %one = arith.constant 1 : index
    %ne = arith.addi %tn, %one : index
    %seven = arith.constant 7 : index
    %he0 = arith.addi %th, %seven : index
    %c28 = arith.constant 28 : index
    %he = arith.minsi %he0, %c28 : index
    loop.nest (%n, %h, %w) = (%tn, %th, 0) to (%ne, %he, 28) {
      simd.loop (%o) = (0) to (64) {
        %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 37) init 0.0 : f32 -> !simd.vec<f32> {
          %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4, d2 + d5, d6)> : memref<?x28x28x37xf32>
          %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<1x1x37x64xf32>
          %s = simd.splat %xv : f32
          %m = simd.mulf %s, %wv : !simd.vec<f32>
          loop.yield %m : !simd.vec<f32>
        }
        simd.store %acc, %out[%n, %h, %w, %o] : memref<?x28x28x64xf32>
      }
    }
  }
  func.return
}

// CHECK-LABEL: func.func @tile_rows
// CHECK:         %he = arith.minsi %he0, %c28 : index
// CHECK-NEXT:    %[[W:.*]] = arith.constant 28 : index
// CHECK-NEXT:    %[[ROUND:.*]] = arith.constant 5 : index
// CHECK-NEXT:    %[[P:.*]] = arith.constant 6 : index
// CHECK-NEXT:    %[[ONE:.*]] = arith.constant 1 : index
// CHECK-NEXT:    %[[START:.*]] = arith.muli %th, %[[W]] : index
// CHECK-NEXT:    %[[END:.*]] = arith.muli %he, %[[W]] : index
// CHECK-NEXT:    %[[SPAN:.*]] = arith.subi %[[END]], %[[START]] : index
// CHECK-NEXT:    %[[UP:.*]] = arith.addi %[[SPAN]], %[[ROUND]] : index
// CHECK-NEXT:    %[[BLOCKS:.*]] = arith.divsi %[[UP]], %[[P]] : index
// CHECK-NEXT:    %[[LAST:.*]] = arith.subi %[[END]], %[[ONE]] : index
// CHECK-NEXT:    loop.nest (%n, %h, %w) = (%tn, 0, 0) to (%ne, 1, %[[BLOCKS]]) attributes {bs.columns = 2 : index} {
// CHECK:           %[[FIRST:.*]] = arith.addi %[[START]], %{{.*}} : index
// CHECK:           %[[C0:.*]] = arith.minsi %{{.*}}, %[[LAST]] : index
// CHECK-NEXT:      %row0 = arith.divsi %[[C0]], %[[W]] : index
// CHECK:           %col5 = arith.subi
// CHECK-NEXT:      %inside5 = arith.cmpi sle, %{{.*}}, %[[LAST]] : index
// CHECK-NEXT:      simd.loop (%o) = (0) to (64) vectors 4 {
// CHECK-NEXT:        %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = loop.reduce add contract
// CHECK-NEXT:          loop.load %x[%n, %row0, %col0, %o, %kh, %kw, %ci]
// CHECK:             simd.store %{{.*}}, %out[%n, %row5, %col5, %o] if %inside5 : memref

// A 3x3 convolution in a depth-first tile (a convolution tiled with the max
// pool after it) splits its 28 columns as outside a tile (register_tile.mlir,
// @split_row): 3 blocks of 6 in the tile's nest, 2 of 5 in a second nest over
// the same tile rows, whose accesses read and write columns 18 + ... (only a
// sum over one tap keeps its rows whole in a tile: MobileNet-V2's 1x1 chains
// were slower split).
func.func @tile_taps(%x: memref<?x28x28x37xf32>, %wt: memref<3x3x37x64xf32>, %out: memref<?x28x28x64xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x28x28x37xf32>
  loop.tile (%tn, %th) = (0, 0) to (%batch, 28) step (1, 7) {
    %one = arith.constant 1 : index
    %ne = arith.addi %tn, %one : index
    %seven = arith.constant 7 : index
    %he0 = arith.addi %th, %seven : index
    %c28 = arith.constant 28 : index
    %he = arith.minsi %he0, %c28 : index
    loop.nest (%n, %h, %w) = (%tn, %th, 0) to (%ne, %he, 28) {
      simd.loop (%o) = (0) to (64) {
        %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (3, 3, 37) init 0.0 : f32 -> !simd.vec<f32> {
          %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4 - 1, d2 + d5 - 1, d6)> pad 0.000000e+00 : f32 : memref<?x28x28x37xf32>
          %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<3x3x37x64xf32>
          %s = simd.splat %xv : f32
          %m = simd.mulf %s, %wv : !simd.vec<f32>
          loop.yield %m : !simd.vec<f32>
        }
        simd.store %acc, %out[%n, %h, %w, %o] : memref<?x28x28x64xf32>
      }
    }
  }
  func.return
}

// CHECK-LABEL: func.func @tile_taps
// CHECK:         loop.nest (%n, %h, %w) = (%tn, %th, 0) to (%ne, %he, 3) attributes {bs.columns = 2 : index} {
// CHECK:           %col5 = arith.addi
// CHECK-NEXT:      simd.loop (%o) = (0) to (64) vectors 4 {
// CHECK:             loop.load %x[%n, %h, %col0, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, ((d1 + d4) + -1), ((d2 + d5) + -1), d6)>
// CHECK:         loop.nest (%n_1, %h_1, %w_1) = (%tn, %th, 0) to (%ne, %he, 2) attributes {bs.columns = 2 : index} {
// CHECK:           %col4_1 = arith.addi
// CHECK-NEXT:      simd.loop (%o_1) = (0) to (64) vectors 4 {
// CHECK:             loop.load %x[%n_1, %h_1, %col0_1, %o_1, %kh_1, %kw_1, %ci_1] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, ((d1 + d4) + -1), (((d2 + 18) + d5) + -1), d6)>
// CHECK:         func.return
