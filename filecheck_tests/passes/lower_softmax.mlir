// RUN: bs-opt %s -p bs-lower-nn-to-loop | filecheck %s
// RUN: bs-opt %s -p bs-lower-nn-to-loop,bs-fuse,bs-reorder,bs-vectorize | filecheck %s --check-prefix=VEC

// PyTorch's softmax: the row max, e = exp(x - max), the row sum and
// e * (1 / sum). Both row reductions combine their vector's lanes by halves,
// as PyTorch's `vec_reduce_all` (`bs.lane_order`), and the quotient of a
// subnormal e is computed on the integer grid (`bs.subnormal_grid`), as
// exact as a plain multiply.
func.func @softmax(%x: tensor<?x5x37xf32>) -> tensor<?x5x37xf32> {
  %r = nn.stack "k_softmax" (%x) : (tensor<?x5x37xf32>) -> tensor<?x5x37xf32> {
  ^bb0(%a: tensor<?x5x37xf32>):
    %y = nn.softmax %a {axis = 2 : i64} : tensor<?x5x37xf32> -> tensor<?x5x37xf32>
    nn.yield %y : tensor<?x5x37xf32>
  }
  func.return %r : tensor<?x5x37xf32>
}

// CHECK-LABEL: func.func @k_softmax
// CHECK:         loop.reduce max (%{{.+}}) = (0) to (37) init 0xff800000 : f32 -> f32 attributes {bs.lane_order = "halves"}
// CHECK:         math.exp %{{.+}} {bs.impl = "sleef_u10"}
// CHECK:         loop.reduce add (%{{.+}}) = (0) to (37) init 0.000000e+00 : f32 -> f32 attributes {bs.lane_order = "halves"}
// CHECK:         arith.mulf %{{.+}}, %{{.+}} {bs.subnormal_grid} : f32

// VEC-LABEL: func.func @k_softmax
// VEC:         simd.reduce_loop max (%{{.+}}) = (0) to (37) init 0xff800000 : f32 attributes {bs.lane_order = "halves"}
// VEC:         simd.reduce_loop add (%{{.+}}) = (0) to (37) init 0.000000e+00 : f32 attributes {bs.lane_order = "halves"}
// VEC:         simd.mulf %{{.+}}, %{{.+}} {bs.subnormal_grid} : !simd.vec<f32>
