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

// A max pool that alone reads the chain's result ends the chain (ResNet's
// stem: bs-tile-depth-first then pools the convolution's tiles in cache).
// Where the activation has another reader, the pool forms a stack of its own.
func.func @stem(%x: tensor<?x29x29x3xf32>, %w: tensor<7x7x3x8xf32>, %g: tensor<8xf32>, %b: tensor<8xf32>, %m: tensor<8xf32>, %v: tensor<8xf32>) -> (tensor<?x8x8x8xf32>, tensor<?x8x8x8xf32>, tensor<?x15x15x8xf32>) {
  %c = nn.conv2d %x, %w {strides = array<i64: 2, 2>, padding = array<i64: 3, 3, 3, 3>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x29x29x3xf32>, tensor<7x7x3x8xf32>) -> tensor<?x15x15x8xf32>
  %n = nn.batch_norm %c weight %g bias %b mean %m var %v {eps = 1.0e-05 : f64, layout = "NHWC"} : (tensor<?x15x15x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x15x15x8xf32>
  %r = nn.relu %n : tensor<?x15x15x8xf32> -> tensor<?x15x15x8xf32>
  %p = nn.max_pool2d %r {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC"} : tensor<?x15x15x8xf32> -> tensor<?x8x8x8xf32>
  %c2 = nn.conv2d %x, %w {strides = array<i64: 2, 2>, padding = array<i64: 3, 3, 3, 3>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x29x29x3xf32>, tensor<7x7x3x8xf32>) -> tensor<?x15x15x8xf32>
  %r2 = nn.relu %c2 : tensor<?x15x15x8xf32> -> tensor<?x15x15x8xf32>
  %p2 = nn.max_pool2d %r2 {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC"} : tensor<?x15x15x8xf32> -> tensor<?x8x8x8xf32>
  func.return %p, %p2, %r2 : tensor<?x8x8x8xf32>, tensor<?x8x8x8xf32>, tensor<?x15x15x8xf32>
}

// CHECK-LABEL: func.func @stem
// CHECK:         nn.stack "stack3" (%x, %w, %g, %b, %m, %v)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.conv2d
// CHECK-NEXT:      nn.batch_norm
// CHECK-NEXT:      nn.relu
// CHECK-NEXT:      nn.max_pool2d
// CHECK-NEXT:      nn.yield
// CHECK:         nn.stack "stack4" (%x, %w)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.conv2d
// CHECK-NEXT:      nn.relu
// CHECK-NEXT:      nn.yield
// CHECK:         nn.stack "stack5"
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.max_pool2d
// CHECK-NEXT:      nn.yield
