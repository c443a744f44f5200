// RUN: bs-opt %s -p bs-lower-nn-to-loop | filecheck %s
// RUN: bs-opt %s -p bs-lower-nn-to-loop,bs-vectorize | filecheck %s --check-prefix=VEC
// RUN: bs-opt %s -p 'bs-lower-nn-to-loop,bs-vectorize,bs-lower-to-llvm{target=x86-64 cpu=skylake-avx512}' | filecheck %s --check-prefix=LLVM

// nn.max_pool2d's `nan` property through the lowering. The max step of
// `loop.reduce max` is `acc = (v > acc || isnan(v)) ? v : acc`.
//
// nan absent or "propagate" (PyTorch): from -inf, of the loaded values; a NaN
// in the window is the result. Both spellings lower alike.
//
// nan = "skip" (TensorFlow's MaxPool): from -FLT_MAX, of `isnan(v) ? -inf : v`,
// never NaN and never greater than the accumulator: the step is then the
// ordered-greater select `acc = v > acc ? v : acc`, so NaN never wins and a
// window without a number (or of -inf only) gives -FLT_MAX.

func.func @propagate(%x: tensor<?x13x13x37xf32>) -> (tensor<?x7x7x37xf32>, tensor<?x7x7x37xf32>) {
  %r:2 = nn.stack "k_propagate" (%x) : (tensor<?x13x13x37xf32>) -> (tensor<?x7x7x37xf32>, tensor<?x7x7x37xf32>) {
  ^bb0(%a: tensor<?x13x13x37xf32>):
    %p = nn.max_pool2d %a {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC"} : tensor<?x13x13x37xf32> -> tensor<?x7x7x37xf32>
    %q = nn.max_pool2d %a {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC", nan = "propagate"} : tensor<?x13x13x37xf32> -> tensor<?x7x7x37xf32>
    nn.yield %p, %q : tensor<?x7x7x37xf32>, tensor<?x7x7x37xf32>
  }
  func.return %r#0, %r#1 : tensor<?x7x7x37xf32>, tensor<?x7x7x37xf32>
}

// CHECK-LABEL: func.func @k_propagate
// CHECK:         loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
// CHECK-NEXT:      %[[M0:.+]] = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xff800000 : f32 -> f32 {
// CHECK-NEXT:        %[[E0:.+]] = loop.load %x[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, (((d2 * 2) + d4) + -1), (((d3 * 2) + d5) + -1), d1)> pad 0xff800000 : f32 : memref<?x13x13x37xf32>
// CHECK-NEXT:        loop.yield %[[E0]] : f32
// CHECK-NEXT:      }
// CHECK-NEXT:      loop.store %[[M0]], %out0[%n, %c, %h, %w]
// CHECK-NEXT:    }
// CHECK-NEXT:    loop.nest (%[[N:.+]], %[[C:.+]], %[[H:.+]], %[[W:.+]]) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
// CHECK-NEXT:      %[[M1:.+]] = loop.reduce max (%[[KH:.+]], %[[KW:.+]]) = (0, 0) to (3, 3) init 0xff800000 : f32 -> f32 {
// CHECK-NEXT:        %[[E1:.+]] = loop.load %x[%[[N]], %[[C]], %[[H]], %[[W]], %[[KH]], %[[KW]]] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, (((d2 * 2) + d4) + -1), (((d3 * 2) + d5) + -1), d1)> pad 0xff800000 : f32 : memref<?x13x13x37xf32>
// CHECK-NEXT:        loop.yield %[[E1]] : f32
// CHECK-NEXT:      }
// CHECK-NEXT:      loop.store %[[M1]], %out1[%[[N]], %[[C]], %[[H]], %[[W]]]
// CHECK-NEXT:    }
// CHECK-NOT:     arith.cmpf
// CHECK:         func.return

func.func @skip(%x: tensor<?x13x13x37xf32>) -> tensor<?x7x7x37xf32> {
  %r = nn.stack "k_skip" (%x) : (tensor<?x13x13x37xf32>) -> tensor<?x7x7x37xf32> {
  ^bb0(%a: tensor<?x13x13x37xf32>):
    %q = nn.max_pool2d %a {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC", nan = "skip"} : tensor<?x13x13x37xf32> -> tensor<?x7x7x37xf32>
    nn.yield %q : tensor<?x7x7x37xf32>
  }
  func.return %r : tensor<?x7x7x37xf32>
}

// CHECK-LABEL: func.func @k_skip
// CHECK:         loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
// CHECK-NEXT:      %[[M:.+]] = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init -3.40282347e+38 : f32 -> f32 {
// CHECK-NEXT:        %[[E:.+]] = loop.load %x[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, (((d2 * 2) + d4) + -1), (((d3 * 2) + d5) + -1), d1)> pad 0xff800000 : f32 : memref<?x13x13x37xf32>
// CHECK-NEXT:        %[[ISNAN:.+]] = arith.cmpf uno, %[[E]], %[[E]] : f32
// CHECK-NEXT:        %[[NEGINF:.+]] = arith.constant 0xff800000 : f32
// CHECK-NEXT:        %[[V:.+]] = arith.select %[[ISNAN]], %[[NEGINF]], %[[E]] : f32
// CHECK-NEXT:        loop.yield %[[V]] : f32
// CHECK-NEXT:      }
// CHECK-NEXT:      loop.store %[[M]], %out[%n, %c, %h, %w]
// CHECK-NEXT:    }

// Vectorized, each lane keeps the rule: the NaN test and select become lane-wise.
// VEC-LABEL: func.func @k_propagate
// VEC-NOT:     simd.cmpf
// VEC-LABEL: func.func @k_skip
// VEC:           loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init -3.40282347e+38 : f32 -> !simd.vec<f32> {
// VEC-NEXT:        %[[E:.+]] = simd.load %x
// VEC-NEXT:        %[[ISNAN:.+]] = simd.cmpf "uno" %[[E]], %[[E]] : !simd.vec<f32>
// VEC-NEXT:        %[[NEGINF:.+]] = arith.constant 0xff800000 : f32
// VEC-NEXT:        %[[SPLAT:.+]] = simd.splat %[[NEGINF]] : f32
// VEC-NEXT:        %[[V:.+]] = simd.select %[[ISNAN]], %[[SPLAT]], %[[E]] : !simd.vec<f32>
// VEC-NEXT:        loop.yield %[[V]] : !simd.vec<f32>
// VEC-NEXT:      }

// On x86 the step is `bs.fmax` (maxps and a NaN blend): of the loaded value
// from -inf (propagate), of the sanitized value from -FLT_MAX (skip).
// LLVM-LABEL: llvm.func @k_propagate_p0
// LLVM-NOT:     bs.fcmp.uno
// LLVM:         llvm.call @bs.fmax.v16f32
// LLVM-NOT:     bs.fcmp.uno
// LLVM-LABEL: llvm.func @k_skip_p0
// LLVM:         llvm.mlir.constant(dense<-3.40282347e+38> : vector<16xf32>) : vector<16xf32>
// LLVM:         %[[ISNAN:.+]] = llvm.call @bs.fcmp.uno.v16f32(%[[E:.+]], %[[E]])
// LLVM-NEXT:    %[[V:.+]] = llvm.call @bs.select.v16f32(%[[ISNAN]], %{{.+}}, %[[E]])
// LLVM-NEXT:    llvm.call @bs.fmax.v16f32(%{{.+}}, %[[V]])
