// RUN: bs-opt %s -p bs-lower-nn-to-loop | filecheck %s

// TensorFlow's exact GELU (`impl = "eigen"`) is 0.5 * x * erfc(-x / sqrt 2):
// half of x first (finite at 3.4e38, +inf at +inf; PyTorch's multiplies
// x * (1 + erf) first), erfc(-z) as 1 + erf(z) with PyTorch's vector erf.

func.func @gelu(%x: tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
  %r = nn.stack "k_gelu" (%x) : (tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
  ^bb0(%a: tensor<?x5x3xf32>):
    %y = nn.gelu %a {approximate = "none", impl = "eigen"} : tensor<?x5x3xf32> -> tensor<?x5x3xf32>
    nn.yield %y : tensor<?x5x3xf32>
  }
  func.return %r : tensor<?x5x3xf32>
}

// CHECK-LABEL: func.func @k_gelu
// CHECK:         %[[X:.+]] = loop.load %x
// CHECK-NEXT:    %[[S:.+]] = arith.constant 0.707106769 : f32
// CHECK-NEXT:    %[[Z:.+]] = arith.mulf %[[X]], %[[S]] : f32
// CHECK-NEXT:    %[[H:.+]] = arith.constant 5.000000e-01 : f32
// CHECK-NEXT:    %[[HX:.+]] = arith.mulf %[[H]], %[[X]] : f32
// CHECK-NEXT:    %[[ONE:.+]] = arith.constant 1.000000e+00 : f32
// CHECK-NEXT:    %[[E:.+]] = math.erf %[[Z]] {bs.impl = "aten"} : f32
// CHECK-NEXT:    %[[P:.+]] = arith.addf %[[ONE]], %[[E]] : f32
// CHECK-NEXT:    %{{.+}} = arith.mulf %[[HX]], %[[P]] : f32
