// RUN: bs-opt %s -p bs-form-stacks,bs-lower-nn-to-loop | filecheck %s

// nn.layer_norm {impl = "eigen"}: Keras's order on TensorFlow. The variance
// divides its sum by n, and the row is x * inv + (-mean * inv + bias) with
// inv = rstd * weight.
func.func @ln(%x: tensor<?x5x19xf32>, %w: tensor<19xf32>, %b: tensor<19xf32>) -> tensor<?x5x19xf32> {
  %y = nn.layer_norm %x weight %w : tensor<19xf32> bias %b : tensor<19xf32> {eps = 1.0e-6 : f64, impl = "eigen"} : tensor<?x5x19xf32> -> tensor<?x5x19xf32>
  func.return %y : tensor<?x5x19xf32>
}

// CHECK-LABEL: func.func @stack0(
// CHECK:         loop.reduce add
// CHECK:         arith.divf
// CHECK:         %[[TOTAL:.+]] = loop.reduce add
// CHECK:         %[[N:.+]] = arith.constant 1.900000e+01 : f32
// CHECK-NEXT:    %{{.+}} = arith.divf %[[TOTAL]], %[[N]] : f32
// CHECK:         loop.nest
// CHECK-NEXT:      %[[R:.+]] = loop.load %rstd
// CHECK-NEXT:      %[[W:.+]] = loop.load %w
// CHECK-NEXT:      %[[INV:.+]] = arith.mulf %[[R]], %[[W]] : f32
// CHECK-NEXT:      %[[M:.+]] = loop.load %mean
// CHECK-NEXT:      %[[NEG:.+]] = arith.negf %[[M]] : f32
// CHECK-NEXT:      %[[RES0:.+]] = arith.mulf %[[NEG]], %[[INV]] : f32
// CHECK-NEXT:      %[[B:.+]] = loop.load %b
// CHECK-NEXT:      %[[RES:.+]] = arith.addf %[[RES0]], %[[B]] : f32
// CHECK-NEXT:      %[[X:.+]] = loop.load %x
// CHECK-NEXT:      %[[XI:.+]] = arith.mulf %[[X]], %[[INV]] : f32
// CHECK-NEXT:      %[[Y:.+]] = arith.addf %[[XI]], %[[RES]] : f32
// CHECK-NEXT:      loop.store %[[Y]], %out
