// RUN: bs-opt %s -p bs-form-stacks | filecheck %s

// bs-form-stacks keeps every stack convex on any DAG: a layer does not join a
// group that reaches it through a layer outside the group, even where that
// path only appeared when two other groups merged. Here the group of %b and
// %a (merged by %m) depends on %f through %n1, and %e depends on that group
// through %n2: %e joining %f's group would make a cycle through both
// convolutions (it did: "a cycle through nn.conv2d").
func.func @merged_groups(%x: tensor<?x5x9x9xf32>, %w: tensor<5x5x3x3xf32>) -> (tensor<?x5x9x9xf32>, tensor<?x5x9x9xf32>) {
  %f = nn.relu %x : tensor<?x5x9x9xf32> -> tensor<?x5x9x9xf32>
  %n1 = nn.conv2d %f, %w {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x5x9x9xf32>, tensor<5x5x3x3xf32>) -> tensor<?x5x9x9xf32>
  %b = nn.relu %n1 : tensor<?x5x9x9xf32> -> tensor<?x5x9x9xf32>
  %a = nn.sigmoid %x : tensor<?x5x9x9xf32> -> tensor<?x5x9x9xf32>
  %n2 = nn.conv2d %a, %w {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x5x9x9xf32>, tensor<5x5x3x3xf32>) -> tensor<?x5x9x9xf32>
  %m = nn.add %a, %b : (tensor<?x5x9x9xf32>, tensor<?x5x9x9xf32>) -> tensor<?x5x9x9xf32>
  %e = nn.mul %n2, %f : (tensor<?x5x9x9xf32>, tensor<?x5x9x9xf32>) -> tensor<?x5x9x9xf32>
  func.return %m, %e : tensor<?x5x9x9xf32>, tensor<?x5x9x9xf32>
}

// CHECK-LABEL: func.func @merged_groups
// CHECK:         %f = nn.stack "stack{{[0-9]+}}" (%x)
// CHECK-NEXT:    ^bb0
// CHECK-NEXT:      nn.relu
// CHECK-NEXT:      nn.yield
// CHECK:         %n1 = nn.conv2d %f, %w
// CHECK:         %a, %m = nn.stack "stack{{[0-9]+}}" (%n1, %x)
// CHECK-NEXT:    ^bb0
// CHECK-NEXT:      nn.relu
// CHECK-NEXT:      nn.sigmoid
// CHECK-NEXT:      nn.add
// CHECK-NEXT:      nn.yield
// CHECK:         %n2 = nn.conv2d
// CHECK:         %e = nn.stack "stack{{[0-9]+}}" (%n2, %f)
// CHECK-NEXT:    ^bb0
// CHECK-NEXT:      nn.mul
// CHECK-NEXT:      nn.yield
// CHECK:         func.return
