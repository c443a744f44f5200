// RUN: bs-opt %s -p bs-lower-nn-to-loop | filecheck %s

// nn.mean {impl = "eigen"}: TensorFlow's summation order for a mean that keeps
// the innermost dim (Eigen's InnerMostDimPreserver on packets of 8 outputs).
// Over 16 or more points an output sums four partial sums over the points
// j = 4q + r (h = j floordiv W, w = j mod W), adds them as ((s0 + s1) + s2) + s3
// and then the last j % 4 points in order; C = 37 is not a multiple of 8, so
// outputs outside a whole packet (the last numel % 8 of them, or a packet that
// crosses into the next image) keep the sum in order, chosen by a select.

func.func @se_pool(%x: tensor<?x5x5x37xf32>) -> tensor<?x1x1x37xf32> {
  %r = nn.stack "k" (%x) : (tensor<?x5x5x37xf32>) -> tensor<?x1x1x37xf32> {
  ^bb0(%a: tensor<?x5x5x37xf32>):
    %y = nn.mean %a {dims = array<i64: 1, 2>, keepdim = true, impl = "eigen"} : tensor<?x5x5x37xf32> -> tensor<?x1x1x37xf32>
    nn.yield %y : tensor<?x1x1x37xf32>
  }
  func.return %r : tensor<?x1x1x37xf32>
}

// CHECK-LABEL: func.func @k
// CHECK:         loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 1, 1, 37) {
//   the sum in order
// CHECK-NEXT:      %[[SEQ:.+]] = loop.reduce add (%kh, %kw) = (0, 0) to (5, 5)
// CHECK:           }
//   four partial sums over j = 4q + r, q < 25 // 4 = 6
// CHECK-NEXT:      %[[S0:.+]] = loop.reduce add (%[[Q:.+]]) = (0) to (6)
// CHECK-NEXT:        loop.load %x[%n, %c, %h, %w, %[[Q]]] map affine_map<(d0, d1, d2, d3, d4) -> (d0, (((d4 * 4) floordiv 5) mod 5), ((d4 * 4) mod 5), d3)>
// CHECK:           %[[S1:.+]] = loop.reduce add
// CHECK-NEXT:        loop.load %x{{.+}} -> (d0, ((((d4 * 4) + 1) floordiv 5) mod 5), (((d4 * 4) + 1) mod 5), d3)>
// CHECK:           %[[S2:.+]] = loop.reduce add
// CHECK:           %[[S3:.+]] = loop.reduce add
// CHECK:           %[[A:.+]] = arith.addf %[[S0]], %[[S1]] : f32
// CHECK-NEXT:      %[[B:.+]] = arith.addf %[[A]], %[[S2]] : f32
// CHECK-NEXT:      %[[C:.+]] = arith.addf %[[B]], %[[S3]] : f32
//   then point 24 (h 4, w 4)
// CHECK-NEXT:      %[[P24:.+]] = loop.load %x[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, 4, 4, d3)>
// CHECK-NEXT:      %[[E:.+]] = arith.addf %[[C]], %[[P24]] : f32
//   whole packet: start + 8 <= N * 37 and start % 37 + 7 < 37
// CHECK:           %[[OK:.+]] = arith.andi
// CHECK-NEXT:      %[[SUM:.+]] = arith.select %[[OK]], %[[E]], %[[SEQ]] : f32
// CHECK:           arith.divf %[[SUM]], %{{.+}} : f32
