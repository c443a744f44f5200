// RUN: bs-opt %s -p 'bs-form-stacks{conv-epilogues=true conv-chains=1024},bs-lower-nn-to-loop,bs-fuse{overlap=tile},bs-reorder,bs-fuse{overlap=tile},bs-tile-depth-first{cache=1000000 item-pairs=true}' | filecheck %s
// RUN: bs-opt %s -p 'bs-form-stacks{conv-epilogues=true conv-chains=1024},bs-lower-nn-to-loop,bs-fuse{overlap=tile},bs-reorder,bs-fuse{overlap=tile},bs-tile-depth-first{cache=1000000}' | filecheck %s --check-prefix=SPLIT
// RUN: bs-opt %s -p 'bs-form-stacks{conv-epilogues=true conv-chains=1024},bs-lower-nn-to-loop,bs-fuse{overlap=tile},bs-reorder,bs-fuse{overlap=tile},bs-tile-depth-first{cache=1000000 item-pairs=true},bs-vectorize,bs-parallelize,bs-lower-to-llvm{cpu=skylake-avx512}' | filecheck %s --check-prefix=IR

// A 5×5 depthwise window over 7 rows: cut in two tiles per item (so that two
// threads share an item at batch 1), the expand convolution computes rows 0-5
// and 2-6, 11 rows for 7. With item-pairs the chain is tiled twice: `items
// few` (the two tiles per item) and `items many` (one tile per item, its rows
// whole and static); each call runs one of them, by its batch against its
// threads. The project convolution after the pair joins both tilings.
func.func @pair(%x: tensor<?x7x7x8xf32>, %we: tensor<1x1x8x24xf32>, %wd: tensor<5x5x1x24xf32>, %wp: tensor<1x1x24x8xf32>) -> tensor<?x7x7x8xf32> {
  %e = nn.conv2d %x, %we {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x7x7x8xf32>, tensor<1x1x8x24xf32>) -> tensor<?x7x7x24xf32>
  %er = nn.relu %e : tensor<?x7x7x24xf32> -> tensor<?x7x7x24xf32>
  %d = nn.conv2d %er, %wd {strides = array<i64: 1, 1>, padding = array<i64: 2, 2, 2, 2>, dilation = array<i64: 1, 1>, groups = 24 : i64, layout = "NHWC"} : (tensor<?x7x7x24xf32>, tensor<5x5x1x24xf32>) -> tensor<?x7x7x24xf32>
  %dr = nn.relu %d : tensor<?x7x7x24xf32> -> tensor<?x7x7x24xf32>
  %p = nn.conv2d %dr, %wp {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x7x7x24xf32>, tensor<1x1x24x8xf32>) -> tensor<?x7x7x8xf32>
  func.return %p : tensor<?x7x7x8xf32>
}

// CHECK:      func.func @stack0(
// CHECK-NOT:    memref.alloc(
// CHECK:        loop.tile (%{{.*}}, %{{.*}}) = (0, 0) to (%batch, 7) step (1, 4) items few {
// CHECK-NEXT:     memref.alloca() : memref<1x4x7x24xf32>
// CHECK-NEXT:     memref.alloca() : memref<1x8x11x24xf32>
// CHECK:          loop.reduce add contract (%{{.*}}, %{{.*}}, %{{.*}}) = (0, 0, 0) to (1, 1, 8)
// CHECK:          loop.reduce add contract (%{{.*}}, %{{.*}}, %{{.*}}) = (0, 0, 0) to (5, 5, 1)
// CHECK:          loop.reduce add contract (%{{.*}}, %{{.*}}, %{{.*}}) = (0, 0, 0) to (1, 1, 24)
// CHECK:        loop.tile (%[[N:.*]]) = (0) to (%batch) step (1) items many {
// CHECK-NEXT:     memref.alloca() : memref<1x7x7x24xf32>
// CHECK-NEXT:     memref.alloca() : memref<1x11x11x24xf32>
// CHECK:          loop.nest (%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) = (%[[N]], 0, 0, 0) to (%{{.*}}, 7, 7, 24)
// CHECK-NEXT:       loop.reduce add contract (%{{.*}}, %{{.*}}, %{{.*}}) = (0, 0, 0) to (1, 1, 8)
// CHECK:          loop.reduce add contract (%{{.*}}, %{{.*}}, %{{.*}}) = (0, 0, 0) to (5, 5, 1)
// CHECK:          loop.reduce add contract (%{{.*}}, %{{.*}}, %{{.*}}) = (0, 0, 0) to (1, 1, 24)
// CHECK-NOT:    loop.tile
// CHECK:        func.return

// Each tiling is a phase of its own; the phase runs its loops where the batch
// (the extent of the first dim) is below (few) or at least (many) the
// threads that run it (the phase's second argument): the `few` phase branches
// into its loops on `batch < threads`, the `many` one past them.
// IR:         llvm.func @stack0_p0(%{{.*}}: i64, %[[THREADS:[0-9]+]]: i64,
// IR:           %[[FEW:.*]] = llvm.icmp "slt" %{{.*}}, %[[THREADS]] : i64
// IR-NEXT:      llvm.cond_br %[[FEW]], ^{{.*}}, ^{{.*}}
// IR:         llvm.func @stack0_p1(%{{.*}}: i64, %[[THREADS1:[0-9]+]]: i64,
// IR:           %[[MANY:.*]] = llvm.icmp "sge" %{{.*}}, %[[THREADS1]] : i64
// IR-NEXT:      llvm.cond_br %[[MANY]], ^{{.*}}, ^{{.*}}
// IR:         llvm.func @stack1_p0(

// SPLIT:        loop.tile (%{{.*}}, %{{.*}}) = (0, 0) to (%batch, 7) step (1, 4) {
// SPLIT-NOT:    loop.tile
// SPLIT:      func.func @stack1(

// A 3×3 window over 28 rows: two tiles per item recompute 2 rows of 28
// (under ITEM_PAIR_RECOMPUTE), one tiling.
func.func @no_pair(%x: tensor<?x28x28x8xf32>, %we: tensor<1x1x8x24xf32>, %wd: tensor<3x3x1x24xf32>) -> tensor<?x28x28x24xf32> {
  %e = nn.conv2d %x, %we {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x28x28x8xf32>, tensor<1x1x8x24xf32>) -> tensor<?x28x28x24xf32>
  %er = nn.relu %e : tensor<?x28x28x24xf32> -> tensor<?x28x28x24xf32>
  %d = nn.conv2d %er, %wd {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 24 : i64, layout = "NHWC"} : (tensor<?x28x28x24xf32>, tensor<3x3x1x24xf32>) -> tensor<?x28x28x24xf32>
  func.return %d : tensor<?x28x28x24xf32>
}

// CHECK:      func.func @stack1(
// CHECK:        loop.tile (%{{.*}}, %{{.*}}) = (0, 0) to (%batch, 28) step (1, 14) {
// CHECK-NOT:    loop.tile
// CHECK:        func.return
