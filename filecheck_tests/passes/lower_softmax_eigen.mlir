// RUN: bs-opt %s -p bs-lower-nn-to-loop | filecheck %s

// TensorFlow's softmax (`impl = "eigen"`, oneDNN's on its CPU): the row max
// skips NaN (read as -inf), and the sum counts a NaN exp as +inf, so a row
// with NaN, or +inf (inf - inf), is NaN there and 0 elsewhere. PyTorch's
// softmax is NaN throughout such a row.

func.func @softmax(%x: tensor<?x5x7xf32>) -> tensor<?x5x7xf32> {
  %r = nn.stack "k_softmax" (%x) : (tensor<?x5x7xf32>) -> tensor<?x5x7xf32> {
  ^bb0(%a: tensor<?x5x7xf32>):
    %y = nn.softmax %a {axis = 2 : i64, impl = "eigen"} : tensor<?x5x7xf32> -> tensor<?x5x7xf32>
    nn.yield %y : tensor<?x5x7xf32>
  }
  func.return %r : tensor<?x5x7xf32>
}

// CHECK-LABEL: func.func @k_softmax
// CHECK:         loop.reduce max
// CHECK:           %[[X:.+]] = loop.load %x
// CHECK-NEXT:      %[[NAN:.+]] = arith.cmpf uno, %[[X]], %[[X]] : f32
// CHECK-NEXT:      %[[NEG:.+]] = arith.constant 0xff800000 : f32
// CHECK-NEXT:      %{{.+}} = arith.select %[[NAN]], %[[NEG]], %[[X]] : f32
// CHECK:         loop.reduce add
// CHECK:           %[[E:.+]] = loop.load %exp
// CHECK-NEXT:      %[[ENAN:.+]] = arith.cmpf uno, %[[E]], %[[E]] : f32
// CHECK-NEXT:      %[[INF:.+]] = arith.constant 0x7f800000 : f32
// CHECK-NEXT:      %{{.+}} = arith.select %[[ENAN]], %[[INF]], %[[E]] : f32
