// RUN: bs-opt %s -p bs-form-stacks,bs-lower-nn-to-loop | filecheck %s
// RUN: bs-opt %s -p bs-form-stacks,bs-lower-nn-to-loop,bs-fuse,bs-reorder,bs-tile-depth-first,bs-vectorize | filecheck %s --check-prefix=VEC
// RUN: bs-opt %s -p 'bs-form-stacks,bs-lower-nn-to-loop,bs-fuse,bs-reorder,bs-tile-depth-first,bs-vectorize,bs-lower-to-llvm{target=x86-64 cpu=skylake-avx512}' | filecheck %s --check-prefix=LLVM

// nn.layer_norm over the innermost dim: per row, the mean, then 1/sqrt of the
// biased variance (a second pass over the row, in cache), then
// (x * rstd + (-mean * rstd)) * weight + bias, in PyTorch's order.
func.func @ln(%x: tensor<?x13x37xf32>, %w: tensor<37xf32>, %b: tensor<37xf32>) -> tensor<?x13x37xf32> {
  %y = nn.layer_norm %x weight %w : tensor<37xf32> bias %b : tensor<37xf32> {eps = 1.0e-5 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return %y : tensor<?x13x37xf32>
}

// CHECK-LABEL: func.func @stack0
// CHECK:         %mean = memref.alloc(%batch) : memref<?x13x1xf32>
// CHECK-NEXT:    %rstd = memref.alloc(%batch) : memref<?x13x1xf32>
// CHECK-NEXT:    loop.nest (%i, %j, %k) = (0, 0, 0) to (%batch, 13, 1) {
// CHECK-NEXT:      %{{.*}} = loop.reduce add (%kh) = (0) to (37) init 0.000000e+00 : f32 -> f32 {
// CHECK:           arith.divf
// CHECK-NEXT:      loop.store %{{.*}}, %mean[%i, %j, %k]
// CHECK:         loop.nest (%i_1, %j_1, %k_1) = (0, 0, 0) to (%batch, 13, 1) {
// CHECK:             %[[D:.*]] = arith.subf
// CHECK-NEXT:        %[[SQ:.*]] = arith.mulf %[[D]], %[[D]] : f32
// CHECK-NEXT:        loop.yield %[[SQ]] : f32
// CHECK:           math.sqrt
// CHECK:           loop.store %{{.*}}, %rstd[%i_1, %j_1, %k_1]
// CHECK:         loop.nest (%i_2, %j_2, %k_2) = (0, 0, 0) to (%batch, 13, 37) {
// CHECK:           %[[NEG:.*]] = arith.negf
// CHECK-NEXT:      %[[SHIFT:.*]] = arith.mulf %[[NEG]]
// CHECK:           %[[XR:.*]] = arith.mulf
// CHECK-NEXT:      %[[N:.*]] = arith.addf %[[XR]], %[[SHIFT]] : f32
// CHECK:           %[[NW:.*]] = arith.mulf %[[N]]
// CHECK:           arith.addf %[[NW]]

// bs-vectorize: the row statistics' nest has an innermost extent of 1, so its
// reductions are vectorized along the row (simd.reduce_loop), not across rows.
// VEC-LABEL: func.func @stack0
// VEC:         loop.nest (%i, %j, %k) = (%{{.*}}, 0, 0) to (%{{.*}}, 13, 1) {
// VEC-NEXT:      %{{.*}} = simd.reduce_loop add (%kh) = (0) to (37) init 0.000000e+00 : f32 {
// VEC-NEXT:        %[[V:.*]] = simd.load %x[%i, %j, %k, %kh]
// VEC-NEXT:        loop.yield %[[V]] : !simd.vec<f32>
// VEC-NEXT:      }
// VEC:           simd.reduce_loop add (%kh_1) = (0) to (37)
// VEC:             simd.mulf
// VEC:         simd.loop (%k_1) = (0) to (37) {

// A vector accumulator over whole chunks (37 = 2 x 16 + 5: a masked
// tail whose inactive lanes add 0), one horizontal add per row statistic.
// LLVM-LABEL: llvm.func @stack0_p0
// LLVM:         llvm.fadd %{{.*}} : vector<16xf32>
// LLVM:         "llvm.masked.load.v16f32.p0"
// LLVM:         llvm.call @bs.select.v16f32
// LLVM:         llvm.call @bs.reduce.add.v16f32
// LLVM-NOT:     llvm.call @bs.reduce.add.f32
