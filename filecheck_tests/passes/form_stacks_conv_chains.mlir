// RUN: bs-opt %s -p 'bs-form-stacks{conv-epilogues=true conv-chains=4096}' | filecheck %s
// RUN: bs-opt %s -p 'bs-form-stacks{conv-epilogues=true conv-chains=8192}' | filecheck %s --check-prefix=SMALL

// With conv-chains=N, a depthwise convolution joins the stack of the
// convolution before it when that one's result (after its epilogue) feeds only
// the depthwise convolution and holds over N bytes per batch item (the
// 9×9×24 expanded tensor: 7,776 bytes), and a pointwise convolution joins such
// a pair: MobileNet's expand → depthwise → project becomes one stack, which
// bs-tile-depth-first runs tile by tile.
func.func @expand_depthwise(%x: tensor<?x9x9x8xf32>, %we: tensor<1x1x8x24xf32>, %wd: tensor<3x3x1x24xf32>, %wp: tensor<1x1x24x8xf32>, %g: tensor<24xf32>, %b: tensor<24xf32>, %m: tensor<24xf32>, %v: tensor<24xf32>) -> tensor<?x9x9x8xf32> {
  %e = nn.conv2d %x, %we {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x9x9x8xf32>, tensor<1x1x8x24xf32>) -> tensor<?x9x9x24xf32>
  %en = nn.batch_norm %e weight %g bias %b mean %m var %v {eps = 1.0e-05 : f64, layout = "NHWC"} : (tensor<?x9x9x24xf32>, tensor<24xf32>, tensor<24xf32>, tensor<24xf32>, tensor<24xf32>) -> tensor<?x9x9x24xf32>
  %er = nn.relu %en : tensor<?x9x9x24xf32> -> tensor<?x9x9x24xf32>
  %d = nn.conv2d %er, %wd {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 24 : i64, layout = "NHWC"} : (tensor<?x9x9x24xf32>, tensor<3x3x1x24xf32>) -> tensor<?x9x9x24xf32>
  %dr = nn.relu %d : tensor<?x9x9x24xf32> -> tensor<?x9x9x24xf32>
  %p = nn.conv2d %dr, %wp {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x9x9x24xf32>, tensor<1x1x24x8xf32>) -> tensor<?x9x9x8xf32>
  func.return %p : tensor<?x9x9x8xf32>
}

// CHECK-LABEL: func.func @expand_depthwise
// CHECK:         %{{.*}} = nn.stack "stack0" (%x, %we, %g, %b, %m, %v, %wd, %wp)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.conv2d
// CHECK-NEXT:      nn.batch_norm
// CHECK-NEXT:      nn.relu
// CHECK-NEXT:      nn.conv2d {{.*}} groups = 24
// CHECK-NEXT:      nn.relu
// CHECK-NEXT:      nn.conv2d {{.*}} groups = 1
// CHECK-NEXT:      nn.yield
// CHECK-NOT:     nn.stack "stack1"

// SMALL-LABEL: func.func @expand_depthwise
// SMALL:         nn.stack "stack0" (%x, %we, %g, %b, %m, %v)
// SMALL:         nn.stack "stack1"
// SMALL:         nn.stack "stack2"

// Under the byte budget (SMALL), and where the expanded tensor has a second
// user, each convolution keeps its stack.
func.func @second_user(%x: tensor<?x9x9x8xf32>, %we: tensor<1x1x8x24xf32>, %wd: tensor<3x3x1x24xf32>) -> (tensor<?x9x9x24xf32>, tensor<?x9x9x24xf32>) {
  %e = nn.conv2d %x, %we {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x9x9x8xf32>, tensor<1x1x8x24xf32>) -> tensor<?x9x9x24xf32>
  %d = nn.conv2d %e, %wd {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 24 : i64, layout = "NHWC"} : (tensor<?x9x9x24xf32>, tensor<3x3x1x24xf32>) -> tensor<?x9x9x24xf32>
  func.return %e, %d : tensor<?x9x9x24xf32>, tensor<?x9x9x24xf32>
}

// CHECK-LABEL: func.func @second_user
// CHECK:         nn.stack "stack{{[0-9]+}}" (%x, %we)
// CHECK:         nn.stack "stack{{[0-9]+}}" (%{{.*}}, %wd)

// A squeeze-excite block's two fully connected layers, pointwise convolutions
// of one pixel, run as one stack at any byte budget; a pointwise convolution
// after one of more pixels does not join it.
func.func @squeeze_excite(%x: tensor<?x1x1x40xf32>, %w1: tensor<1x1x40x10xf32>, %w2: tensor<1x1x10x40xf32>, %y: tensor<?x5x5x40xf32>, %w3: tensor<1x1x40x40xf32>) -> (tensor<?x1x1x40xf32>, tensor<?x5x5x40xf32>) {
  %a = nn.conv2d %x, %w1 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x1x1x40xf32>, tensor<1x1x40x10xf32>) -> tensor<?x1x1x10xf32>
  %s = nn.silu %a : tensor<?x1x1x10xf32> -> tensor<?x1x1x10xf32>
  %b = nn.conv2d %s, %w2 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x1x1x10xf32>, tensor<1x1x10x40xf32>) -> tensor<?x1x1x40xf32>
  %g = nn.sigmoid %b : tensor<?x1x1x40xf32> -> tensor<?x1x1x40xf32>
  %c = nn.conv2d %y, %w3 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x5x5x40xf32>, tensor<1x1x40x40xf32>) -> tensor<?x5x5x40xf32>
  %cs = nn.silu %c : tensor<?x5x5x40xf32> -> tensor<?x5x5x40xf32>
  %d = nn.conv2d %cs, %w3 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x5x5x40xf32>, tensor<1x1x40x40xf32>) -> tensor<?x5x5x40xf32>
  func.return %g, %d : tensor<?x1x1x40xf32>, tensor<?x5x5x40xf32>
}

// CHECK-LABEL: func.func @squeeze_excite
// CHECK:         nn.stack "stack{{[0-9]+}}" (%x, %w1, %w2)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.conv2d
// CHECK-NEXT:      nn.silu
// CHECK-NEXT:      nn.conv2d
// CHECK-NEXT:      nn.sigmoid
// CHECK-NEXT:      nn.yield
// CHECK:         nn.stack "stack{{[0-9]+}}" (%y, %w3)
// CHECK:         nn.stack "stack{{[0-9]+}}" ({{.*}}, %w3)

// SMALL-LABEL: func.func @squeeze_excite
// SMALL:         nn.stack "stack{{[0-9]+}}" (%x, %w1, %w2)
