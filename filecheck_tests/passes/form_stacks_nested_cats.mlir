// RUN: bs-opt %s -p bs-form-stacks | filecheck %s

// Nested concatenations along one axis (Keras's DenseNet: each layer
// concatenates the previous concatenation with its new features) read the
// inner one's operands: the outer `cat` reads %a, %b and %c in place. The inner
// `cat`, which its own batch norm still reads, stays for that; one that
// nothing else reads goes.
func.func @nested_cats(%a: tensor<?x5x5x16xf32>, %b: tensor<?x5x5x16xf32>, %c: tensor<?x5x5x16xf32>, %g: tensor<32xf32>) -> (tensor<?x5x5x32xf32>, tensor<?x5x5x48xf32>, tensor<?x5x5x48xf32>) {
  %ab = nn.cat %a, %b {axis = 3 : i64} : (tensor<?x5x5x16xf32>, tensor<?x5x5x16xf32>) -> tensor<?x5x5x32xf32>
  %n = nn.batch_norm %ab weight %g bias %g mean %g var %g {eps = 1.0e-05 : f64, layout = "NHWC"} : (tensor<?x5x5x32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<?x5x5x32xf32>
  %abc = nn.cat %ab, %c {axis = 3 : i64} : (tensor<?x5x5x32xf32>, tensor<?x5x5x16xf32>) -> tensor<?x5x5x48xf32>
  %r = nn.relu %abc : tensor<?x5x5x48xf32> -> tensor<?x5x5x48xf32>
  %bc = nn.cat %b, %c {axis = 3 : i64} : (tensor<?x5x5x16xf32>, tensor<?x5x5x16xf32>) -> tensor<?x5x5x32xf32>
  %abc2 = nn.cat %a, %bc {axis = 3 : i64} : (tensor<?x5x5x16xf32>, tensor<?x5x5x32xf32>) -> tensor<?x5x5x48xf32>
  %r2 = nn.relu %abc2 : tensor<?x5x5x48xf32> -> tensor<?x5x5x48xf32>
  func.return %n, %r, %r2 : tensor<?x5x5x32xf32>, tensor<?x5x5x48xf32>, tensor<?x5x5x48xf32>
}

// CHECK-LABEL: func.func @nested_cats
// CHECK:         nn.stack "stack{{[0-9]+}}" (%a, %b, %g)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.cat %0, %1 {axis = 3 : i64}
// CHECK-NEXT:      nn.batch_norm
// CHECK-NEXT:      nn.yield
// CHECK:         nn.stack "stack{{[0-9]+}}" (%a, %b, %c)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.cat %0, %1, %2 {axis = 3 : i64}
// CHECK-NEXT:      nn.relu
// CHECK:         nn.stack "stack{{[0-9]+}}" (%a, %b, %c)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.cat %0, %1, %2 {axis = 3 : i64}
// CHECK-NEXT:      nn.relu
// CHECK-NOT:     nn.cat
