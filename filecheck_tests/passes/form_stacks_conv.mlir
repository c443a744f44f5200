// RUN: bs-opt %s -p 'bs-form-stacks{conv-epilogues=true}' | filecheck %s

// With conv-epilogues, each channels-last convolution starts a stack with the
// pointwise layers that use only its running result: batch norm, activations,
// and a residual add (whose other operand comes from outside). A value with a
// second user (the block's input, which also feeds the shortcut) ends the chain.
// A basic residual block: two stacks, no framework layers between them.
func.func @block(%x: tensor<?x9x9x8xf32>, %w1: tensor<3x3x8x8xf32>, %w2: tensor<3x3x8x8xf32>, %g: tensor<8xf32>, %b: tensor<8xf32>, %m: tensor<8xf32>, %v: tensor<8xf32>) -> tensor<?x9x9x8xf32> {
  %c1 = nn.conv2d %x, %w1 {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x9x9x8xf32>, tensor<3x3x8x8xf32>) -> tensor<?x9x9x8xf32>
  %n1 = nn.batch_norm %c1 weight %g bias %b mean %m var %v {eps = 1.0e-05 : f64, layout = "NHWC"} : (tensor<?x9x9x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x9x9x8xf32>
  %r1 = nn.relu %n1 : tensor<?x9x9x8xf32> -> tensor<?x9x9x8xf32>
  %c2 = nn.conv2d %r1, %w2 {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x9x9x8xf32>, tensor<3x3x8x8xf32>) -> tensor<?x9x9x8xf32>
  %n2 = nn.batch_norm %c2 weight %g bias %b mean %m var %v {eps = 1.0e-05 : f64, layout = "NHWC"} : (tensor<?x9x9x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x9x9x8xf32>
  %s = nn.add %n2, %x : (tensor<?x9x9x8xf32>, tensor<?x9x9x8xf32>) -> tensor<?x9x9x8xf32>
  %y = nn.relu %s : tensor<?x9x9x8xf32> -> tensor<?x9x9x8xf32>
  func.return %y : tensor<?x9x9x8xf32>
}

// CHECK-LABEL: func.func @block
// CHECK:         %{{.*}} = nn.stack "stack0" (%x, %w1, %g, %b, %m, %v)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.conv2d
// CHECK-NEXT:      nn.batch_norm
// CHECK-NEXT:      nn.relu
// CHECK-NEXT:      nn.yield
// CHECK:         %{{.*}} = nn.stack "stack1"
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.conv2d
// CHECK-NEXT:      nn.batch_norm
// CHECK-NEXT:      nn.add
// CHECK-NEXT:      nn.relu
// CHECK-NEXT:      nn.yield
// CHECK-NOT:     nn.stack
// CHECK:         func.return

// An NCHW convolution is not compiled: it stays a framework layer, and its
// ReLU forms an ordinary stack.
func.func @nchw(%x: tensor<?x8x9x9xf32>, %w: tensor<8x8x3x3xf32>) -> tensor<?x8x9x9xf32> {
  %c = nn.conv2d %x, %w {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x8x9x9xf32>, tensor<8x8x3x3xf32>) -> tensor<?x8x9x9xf32>
  %r = nn.relu %c : tensor<?x8x9x9xf32> -> tensor<?x8x9x9xf32>
  func.return %r : tensor<?x8x9x9xf32>
}

// CHECK-LABEL: func.func @nchw
// CHECK:         %c = nn.conv2d
// CHECK:         nn.stack "stack2" (%c)
