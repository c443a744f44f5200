// RUN: bs-opt %s -p 'bs-lower-nn-to-loop,bs-fuse,bs-vectorize,bs-register-tile{broadcast-operands=true}' | filecheck %s

// A linear layer whose weight is packed as a 1x1 convolution's ([1, 1, K, O])
// lowers to a pointwise convolution's sum over (kh, kw, ci) = (1, 1, K), the
// points being its rows (13 per batch item): bs-register-tile blocks it as it
// does a convolution, 7 rows x 4 vectors of outputs (13 rows in 2 blocks, the
// last recomputing row 12), with the bias add and the ReLU after it (its
// epilogue: a vector of the output features broadcast) applied to each row's
// accumulators in registers.
func.func @mlp(%x: tensor<?x13x37xf32>, %w: tensor<1x1x37x53xf32>, %b: tensor<53xf32>) -> tensor<?x13x53xf32> {
  %r = nn.stack "fc" (%x, %w, %b) : (tensor<?x13x37xf32>, tensor<1x1x37x53xf32>, tensor<53xf32>) -> tensor<?x13x53xf32> {
  ^bb0(%xa: tensor<?x13x37xf32>, %wa: tensor<1x1x37x53xf32>, %ba: tensor<53xf32>):
    %y = nn.linear %xa, %wa : (tensor<?x13x37xf32>, tensor<1x1x37x53xf32>) -> tensor<?x13x53xf32>
    %s = nn.add %y, %ba : (tensor<?x13x53xf32>, tensor<53xf32>) -> tensor<?x13x53xf32>
    %z = nn.relu %s : tensor<?x13x53xf32> -> tensor<?x13x53xf32>
    nn.yield %z : tensor<?x13x53xf32>
  }
  func.return %r : tensor<?x13x53xf32>
}

// CHECK-LABEL: func.func @fc
// CHECK:         loop.nest (%i, %j) = (0, 0) to (%batch, 2) attributes {bs.columns = 1 : index} {
// CHECK:           %col6 = arith.minsi %{{.*}}, %{{.*}} : index
// CHECK:           simd.loop (%k) = (0) to (53) vectors 4 {
// CHECK-NEXT:        %[[R0:.*]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 37)
// CHECK-NEXT:          loop.load %x[%i, %col0, %k, %ci, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d3)>
// CHECK:               simd.load %w[%i, %col0, %k, %ci, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d4, d5, d3, d2)>
// CHECK:             %[[B:.*]] = simd.load %b[%i, %col0, %k] map affine_map<(d0, d1, d2) -> (d2)>
// CHECK:             %[[S0:.*]] = simd.addf %[[R0]], %[[B]]
// CHECK-NEXT:        %[[LT:.*]] = simd.cmpf "olt" %[[S0]], %{{.*}}
// CHECK-NEXT:        %[[Y0:.*]] = simd.select %[[LT]], %{{.*}}, %[[S0]]
// CHECK-NEXT:        simd.store %[[Y0]], %out[%i, %col0, %k]
// CHECK:             simd.store %{{.*}}, %out[%i, %col6, %k] if %inside6
