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

// nn.addcmul is `input + tensor1 * tensor2` rounded once: a `math.fma` of the
// product's operands and the addend, each read through its broadcast map.
func.func @affine(%x: tensor<?x9x7xf32>, %alpha: tensor<7xf32>, %beta: tensor<7xf32>) -> tensor<?x9x7xf32> {
  %y = nn.addcmul %beta, %alpha, %x : (tensor<7xf32>, tensor<7xf32>, tensor<?x9x7xf32>) -> tensor<?x9x7xf32>
  func.return %y : tensor<?x9x7xf32>
}

// CHECK-LABEL: func.func @stack1(
// CHECK:           %[[B:.+]] = loop.load %beta[{{.*}}] map affine_map<(d0, d1, d2) -> (d2)>
// CHECK-NEXT:      %[[A:.+]] = loop.load %alpha[{{.*}}] map affine_map<(d0, d1, d2) -> (d2)>
// CHECK-NEXT:      %[[X:.+]] = loop.load %x
// CHECK-NEXT:      %[[Y:.+]] = math.fma %[[A]], %[[X]], %[[B]] : f32
// CHECK-NEXT:      loop.store %[[Y]]

// nn.sum is nn.mean's sum in row-major order, not divided.
func.func @radix_sum(%x: tensor<?x2x5x7xf32>) -> tensor<?x5x7xf32> {
  %y = nn.sum %x {dims = array<i64: 1>, keepdim = false} : tensor<?x2x5x7xf32> -> tensor<?x5x7xf32>
  func.return %y : tensor<?x5x7xf32>
}

// CHECK-LABEL: func.func @stack2(
// CHECK:           %[[S:.+]] = loop.reduce add (%{{.+}}) = (0) to (2) init 0.000000e+00 : f32 -> f32 {
// CHECK:           }
// CHECK-NOT:       arith.divf
// CHECK-NEXT:      loop.store %[[S]]
