// RUN: bs-opt %s -p 'bs-form-stacks{conv-epilogues=true conv-chains=1024},bs-lower-nn-to-loop,bs-fuse{overlap=tile},bs-reorder,bs-fuse{overlap=tile},bs-tile-depth-first{cache=4096}' | filecheck %s
// RUN: bs-opt %s -p 'bs-form-stacks{conv-epilogues=true conv-chains=1024},bs-lower-nn-to-loop,bs-fuse{overlap=tile},bs-reorder,bs-fuse{overlap=tile},bs-tile-depth-first{cache=1000000}' | filecheck %s --check-prefix=ITEM
// RUN: bs-opt %s -p 'bs-form-stacks{conv-epilogues=true conv-chains=1024},bs-lower-nn-to-loop,bs-fuse{overlap=tile},bs-reorder,bs-fuse{overlap=tile},bs-tile-depth-first{cache=4096 window-cache=16384}' | filecheck %s --check-prefix=WINDOW

// MobileNet's expand → depthwise pair in one stack (bs-form-stacks with
// conv-chains) runs depth-first: each tile computes the 1×1 convolution's
// rows that a row of the depthwise 3×3 reads (its row and a halo row on each
// side, here in a 1×3×11×24 tile of scratch: 4 KiB of cache) and runs the
// depthwise convolution on them. The expanded tensor is never written whole.
// Halo points outside the image get the depthwise convolution's pad value.
// With a large budget (the ITEM lines), where one tile would hold an item whole, its rows are
// cut in two tiles (ITEM_TILES), so that two threads share an item at batch 1.
// With a larger budget along windowed dims (window-cache, the WINDOW lines),
// where every tile recomputes its halo rows, the tiles take 5 rows, not 1: the
// 1×1 convolution computes 7 rows per 5 instead of 3 per 1.
func.func @expand_depthwise(%x: tensor<?x9x9x8xf32>, %we: tensor<1x1x8x24xf32>, %wd: tensor<3x3x1x24xf32>) -> tensor<?x9x9x24xf32> {
  %e = nn.conv2d %x, %we {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x9x9x8xf32>, tensor<1x1x8x24xf32>) -> tensor<?x9x9x24xf32>
  %er = nn.relu %e : tensor<?x9x9x24xf32> -> tensor<?x9x9x24xf32>
  %d = nn.conv2d %er, %wd {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 24 : i64, layout = "NHWC"} : (tensor<?x9x9x24xf32>, tensor<3x3x1x24xf32>) -> tensor<?x9x9x24xf32>
  func.return %d : tensor<?x9x9x24xf32>
}

// CHECK:      func.func @stack0(%x: memref<?x9x9x8xf32>, %we: memref<1x1x8x24xf32>, %wd: memref<3x3x1x24xf32>, %out: memref<?x9x9x24xf32>)
// CHECK-NOT:    memref.alloc()
// CHECK:        loop.tile (%[[N:.*]], %[[ROW:.*]]) = (0, 0) to (%batch, 9) step (1, 1) {
// CHECK-NEXT:     %[[TILE:.*]] = memref.alloca() : memref<1x3x11x24xf32>
// WINDOW:       loop.tile (%{{.*}}, %{{.*}}) = (0, 0) to (%batch, 9) step (1, 5) {
// WINDOW-NEXT:    memref.alloca() : memref<1x7x11x24xf32>
// CHECK:          loop.nest
// CHECK-NEXT:       loop.reduce add contract (%{{.*}}, %{{.*}}, %{{.*}}) = (0, 0, 0) to (1, 1, 8)
// CHECK-NEXT:         loop.load %x
// CHECK-NEXT:         loop.load %we
// CHECK:            loop.store %{{.*}}, %[[TILE]]
// CHECK:          arith.constant 0.000000e+00 : f32
// CHECK-NEXT:     loop.store %{{.*}}, %[[TILE]]
// CHECK:          loop.reduce add contract (%{{.*}}, %{{.*}}, %{{.*}}) = (0, 0, 0) to (3, 3, 1)
// CHECK-NEXT:         loop.load %[[TILE]]
// CHECK-NEXT:         loop.load %wd
// CHECK:            loop.store %{{.*}}, %out

// With the project convolution after the pair (bs-form-stacks chains it too),
// the depthwise convolution's output is a second scratch buffer that the next
// nest reads point by point along the tiled dims: the project nest joins the
// tile on the tile's block of rows, and that buffer becomes a tile-sized
// alloca as well. Three convolutions run per tile; only the block's input and
// output touch full-size tensors.
func.func @inverted_residual(%x: tensor<?x9x9x8xf32>, %we: tensor<1x1x8x24xf32>, %wd: tensor<3x3x1x24xf32>, %wp: tensor<1x1x24x8xf32>) -> tensor<?x9x9x8xf32> {
  %e = nn.conv2d %x, %we {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x9x9x8xf32>, tensor<1x1x8x24xf32>) -> tensor<?x9x9x24xf32>
  %er = nn.relu %e : tensor<?x9x9x24xf32> -> tensor<?x9x9x24xf32>
  %d = nn.conv2d %er, %wd {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 24 : i64, layout = "NHWC"} : (tensor<?x9x9x24xf32>, tensor<3x3x1x24xf32>) -> tensor<?x9x9x24xf32>
  %dr = nn.relu %d : tensor<?x9x9x24xf32> -> tensor<?x9x9x24xf32>
  %p = nn.conv2d %dr, %wp {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x9x9x24xf32>, tensor<1x1x24x8xf32>) -> tensor<?x9x9x8xf32>
  %s = nn.add %p, %x : (tensor<?x9x9x8xf32>, tensor<?x9x9x8xf32>) -> tensor<?x9x9x8xf32>
  func.return %s : tensor<?x9x9x8xf32>
}

// CHECK:      func.func @stack1(%x: memref<?x9x9x8xf32>, %we: memref<1x1x8x24xf32>, %wd: memref<3x3x1x24xf32>, %wp: memref<1x1x24x8xf32>, %out: memref<?x9x9x8xf32>)
// CHECK-NOT:    memref.alloc()
// CHECK:        loop.tile (%[[N:.*]], %[[ROW:.*]]) = (0, 0) to (%batch, 9) step (1, 1) {
// CHECK-NEXT:     %[[DEPTHWISE:.*]] = memref.alloca() : memref<1x1x9x24xf32>
// CHECK-NEXT:     %[[EXPANDED:.*]] = memref.alloca() : memref<1x3x11x24xf32>
// CHECK:          loop.reduce add contract (%{{.*}}, %{{.*}}, %{{.*}}) = (0, 0, 0) to (1, 1, 8)
// CHECK:          loop.store %{{.*}}, %[[EXPANDED]]
// CHECK:          loop.reduce add contract (%{{.*}}, %{{.*}}, %{{.*}}) = (0, 0, 0) to (3, 3, 1)
// CHECK-NEXT:       loop.load %[[EXPANDED]]
// CHECK:          loop.store %{{.*}}, %[[DEPTHWISE]]
// CHECK:          loop.nest (%{{.*}}) = (%[[N]], %[[ROW]], 0, 0) to
// CHECK-NEXT:       loop.reduce add contract (%{{.*}}, %{{.*}}, %{{.*}}) = (0, 0, 0) to (1, 1, 24)
// CHECK-NEXT:         loop.load %[[DEPTHWISE]]
// CHECK:            loop.load %x
// CHECK:            loop.store %{{.*}}, %out
// CHECK-NEXT:     }
// CHECK-NEXT:   }
// CHECK-NEXT:   func.return

// ITEM-LABEL: func.func @stack0
// ITEM:         loop.tile (%{{.*}}, %{{.*}}) = (0, 0) to (%batch, 9) step (1, 5) {
// ITEM-NEXT:      memref.alloca() : memref<1x7x11x24xf32>
