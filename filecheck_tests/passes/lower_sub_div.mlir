// RUN: bs-opt %s -p bs-form-stacks,bs-lower-nn-to-loop | filecheck %s

// nn.sub and nn.div are IEEE subtraction and division with broadcasting (the
// input Normalization of Keras: (x - mean) / max(sqrt(var), eps)).
func.func @normalize(%x: tensor<?x5x7x3xf32>, %m: tensor<1x1x1x3xf32>, %d: tensor<1x1x1x3xf32>) -> tensor<?x5x7x3xf32> {
  %c = nn.sub %x, %m : (tensor<?x5x7x3xf32>, tensor<1x1x1x3xf32>) -> tensor<?x5x7x3xf32>
  %y = nn.div %c, %d : (tensor<?x5x7x3xf32>, tensor<1x1x1x3xf32>) -> tensor<?x5x7x3xf32>
  func.return %y : tensor<?x5x7x3xf32>
}

// CHECK-LABEL: func.func @stack0(
// CHECK:           %[[X:.+]] = loop.load %x
// CHECK-NEXT:      %[[M:.+]] = loop.load %m[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (0, 0, 0, d3)>
// CHECK-NEXT:      %[[C:.+]] = arith.subf %[[X]], %[[M]] : f32
// CHECK:           %[[D:.+]] = loop.load %d[{{.*}}] map affine_map<(d0, d1, d2, d3) -> (0, 0, 0, d3)>
// CHECK-NEXT:      %{{.+}} = arith.divf %{{.+}}, %[[D]] : f32
