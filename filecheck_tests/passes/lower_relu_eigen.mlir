// RUN: bs-opt %s -p bs-lower-nn-to-loop | filecheck %s

// TensorFlow's Relu and Relu6 (`impl = "eigen"`) are Eigen's cwiseMax: the
// bound where x <= bound, so -0 becomes +0 (PyTorch's keeps -0: x < bound);
// NaN is kept by both (an ordered compare is false).

func.func @relu(%x: tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
  %r = nn.stack "k_relu" (%x) : (tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
  ^bb0(%a: tensor<?x5x3xf32>):
    %y = nn.relu %a {impl = "eigen"} : tensor<?x5x3xf32> -> tensor<?x5x3xf32>
    nn.yield %y : tensor<?x5x3xf32>
  }
  func.return %r : tensor<?x5x3xf32>
}

// CHECK-LABEL: func.func @k_relu
// CHECK:         %[[X:.+]] = loop.load %x
// CHECK-NEXT:    arith.constant 0.000000e+00 : f32
// CHECK-NEXT:    %[[LE:.+]] = arith.cmpf ole, %[[X]], %{{.+}} : f32
// CHECK-NEXT:    %[[Z:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:    %{{.+}} = arith.select %[[LE]], %[[Z]], %[[X]] : f32

func.func @relu6(%x: tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
  %r = nn.stack "k_relu6" (%x) : (tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
  ^bb0(%a: tensor<?x5x3xf32>):
    %y = nn.clamp %a {min = 0.000000e+00 : f64, max = 6.000000e+00 : f64, impl = "eigen"} : tensor<?x5x3xf32> -> tensor<?x5x3xf32>
    nn.yield %y : tensor<?x5x3xf32>
  }
  func.return %r : tensor<?x5x3xf32>
}

// CHECK-LABEL: func.func @k_relu6
// CHECK:         %[[X:.+]] = loop.load %x
// CHECK-NEXT:    arith.constant 0.000000e+00 : f32
// CHECK-NEXT:    %[[LE:.+]] = arith.cmpf ole, %[[X]], %{{.+}} : f32
// CHECK-NEXT:    %[[Z:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:    %[[LO:.+]] = arith.select %[[LE]], %[[Z]], %[[X]] : f32
// CHECK-NEXT:    %[[SIX:.+]] = arith.constant 6.000000e+00 : f32
// CHECK-NEXT:    %[[GT:.+]] = arith.cmpf ogt, %[[LO]], %[[SIX]] : f32
// CHECK-NEXT:    %{{.+}} = arith.select %[[GT]], %[[SIX]], %[[LO]] : f32
