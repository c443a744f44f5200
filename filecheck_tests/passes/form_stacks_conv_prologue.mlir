// RUN: bs-opt %s -p 'bs-form-stacks{conv-epilogues=true conv-prologues=true}' | filecheck %s
// RUN: bs-opt %s -p 'bs-form-stacks{conv-epilogues=true conv-chains=4096}' | filecheck %s --check-prefix=NONE

// A squeeze-excite block's scale (`x * s`, s per channel) that only the project
// convolution reads is that convolution's prologue: one stack, which
// bs-tile-depth-first then runs tile by tile, so the scaled tensor never leaves
// the cache. A scale that something else also reads stays a stack of its own.
func.func @scale_prologue(%x: tensor<?x5x5x40xf32>, %s: tensor<?x1x1x40xf32>, %w: tensor<1x1x40x16xf32>, %g: tensor<16xf32>, %b: tensor<16xf32>, %m: tensor<16xf32>, %v: tensor<16xf32>) -> (tensor<?x5x5x16xf32>, tensor<?x5x5x16xf32>, tensor<?x5x5x40xf32>) {
  %y = nn.mul %x, %s : (tensor<?x5x5x40xf32>, tensor<?x1x1x40xf32>) -> tensor<?x5x5x40xf32>
  %c = nn.conv2d %y, %w {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x5x5x40xf32>, tensor<1x1x40x16xf32>) -> tensor<?x5x5x16xf32>
  %n = nn.batch_norm %c weight %g bias %b mean %m var %v {eps = 1.0e-05 : f64, layout = "NHWC"} : (tensor<?x5x5x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<?x5x5x16xf32>
  %y2 = nn.mul %x, %s : (tensor<?x5x5x40xf32>, tensor<?x1x1x40xf32>) -> tensor<?x5x5x40xf32>
  %c2 = nn.conv2d %y2, %w {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x5x5x40xf32>, tensor<1x1x40x16xf32>) -> tensor<?x5x5x16xf32>
  func.return %n, %c2, %y2 : tensor<?x5x5x16xf32>, tensor<?x5x5x16xf32>, tensor<?x5x5x40xf32>
}

// CHECK-LABEL: func.func @scale_prologue
// CHECK:         nn.stack "stack{{[0-9]+}}" (%x, %s, %w, %g, %b, %m, %v)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.mul
// CHECK-NEXT:      nn.conv2d
// CHECK-NEXT:      nn.batch_norm
// CHECK-NEXT:      nn.yield
// CHECK:         nn.stack "stack{{[0-9]+}}" (%{{.*}}, %w)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.conv2d
// CHECK-NEXT:      nn.yield

// Without conv-prologues (a GPU plan), the scale is a stack of its own.
// NONE-LABEL: func.func @scale_prologue
// NONE:         nn.stack "stack{{[0-9]+}}" (%{{.*}}, %w, %g, %b, %m, %v)
// NONE-NEXT:    ^{{.*}}
// NONE-NEXT:      nn.conv2d
// NONE:         nn.stack "stack{{[0-9]+}}" (%x, %s)
// NONE-NEXT:    ^{{.*}}
// NONE-NEXT:      nn.mul
// NONE-NEXT:      nn.yield

// A ReLU after a batch norm whose result only it reads would join the batch
// norm's stack anyway: as a prologue it would save no pass, so the convolution
// takes none. A ReLU of the function's argument would be a pass of its own:
// the convolution takes it. So does the pre-activation of a `cat` along the
// channels (DenseNet): the convolution then reads the pieces in place, and
// neither the concatenation nor its BN-ReLU is written.
func.func @pre_activation(%x: tensor<?x5x5x40xf32>, %y: tensor<?x5x5x32xf32>, %w: tensor<1x1x40x16xf32>, %w72: tensor<1x1x72x16xf32>, %g: tensor<40xf32>, %b: tensor<40xf32>, %m: tensor<40xf32>, %v: tensor<40xf32>, %g72: tensor<72xf32>) -> (tensor<?x5x5x16xf32>, tensor<?x5x5x16xf32>, tensor<?x5x5x16xf32>) {
  %n = nn.batch_norm %x weight %g bias %b mean %m var %v {eps = 1.0e-05 : f64, layout = "NHWC"} : (tensor<?x5x5x40xf32>, tensor<40xf32>, tensor<40xf32>, tensor<40xf32>, tensor<40xf32>) -> tensor<?x5x5x40xf32>
  %r = nn.relu %n : tensor<?x5x5x40xf32> -> tensor<?x5x5x40xf32>
  %c = nn.conv2d %r, %w {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x5x5x40xf32>, tensor<1x1x40x16xf32>) -> tensor<?x5x5x16xf32>
  %r2 = nn.relu %x : tensor<?x5x5x40xf32> -> tensor<?x5x5x40xf32>
  %c2 = nn.conv2d %r2, %w {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x5x5x40xf32>, tensor<1x1x40x16xf32>) -> tensor<?x5x5x16xf32>
  %k = nn.cat %x, %y {axis = 3 : i64} : (tensor<?x5x5x40xf32>, tensor<?x5x5x32xf32>) -> tensor<?x5x5x72xf32>
  %n3 = nn.batch_norm %k weight %g72 bias %g72 mean %g72 var %g72 {eps = 1.0e-05 : f64, layout = "NHWC"} : (tensor<?x5x5x72xf32>, tensor<72xf32>, tensor<72xf32>, tensor<72xf32>, tensor<72xf32>) -> tensor<?x5x5x72xf32>
  %r3 = nn.relu %n3 : tensor<?x5x5x72xf32> -> tensor<?x5x5x72xf32>
  %c3 = nn.conv2d %r3, %w72 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x5x5x72xf32>, tensor<1x1x72x16xf32>) -> tensor<?x5x5x16xf32>
  func.return %c, %c2, %c3 : tensor<?x5x5x16xf32>, tensor<?x5x5x16xf32>, tensor<?x5x5x16xf32>
}

// CHECK-LABEL: func.func @pre_activation
// CHECK:         %[[R:.*]] = nn.stack "stack{{[0-9]+}}" (%x, %g, %b, %m, %v)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.batch_norm
// CHECK-NEXT:      nn.relu
// CHECK-NEXT:      nn.yield
// CHECK:         nn.stack "stack{{[0-9]+}}" (%[[R]], %w)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.conv2d
// CHECK-NEXT:      nn.yield
// CHECK:         nn.stack "stack{{[0-9]+}}" (%x, %w)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.relu
// CHECK-NEXT:      nn.conv2d
// CHECK-NEXT:      nn.yield
// CHECK:         nn.stack "stack{{[0-9]+}}" (%x, %y, %g72, %w72)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.cat
// CHECK-NEXT:      nn.batch_norm
// CHECK-NEXT:      nn.relu
// CHECK-NEXT:      nn.conv2d
// CHECK-NEXT:      nn.yield

// A squeeze-excite block's squeeze (the global pool that only its first fully
// connected layer reads) is that layer's prologue: the excitation runs in the
// pool's kernel. Where a batch norm before the pool would take it into its
// own stack (it pools the activation as it writes it), it stays there.
func.func @squeeze(%x: tensor<?x5x5x40xf32>, %w1: tensor<1x1x40x8xf32>, %w2: tensor<1x1x8x40xf32>, %g: tensor<40xf32>, %b: tensor<40xf32>, %m: tensor<40xf32>, %v: tensor<40xf32>) -> (tensor<?x1x1x40xf32>, tensor<?x1x1x8xf32>, tensor<?x5x5x40xf32>) {
  %p = nn.adaptive_avg_pool2d %x {output_size = array<i64: 1, 1>, layout = "NHWC"} : tensor<?x5x5x40xf32> -> tensor<?x1x1x40xf32>
  %f1 = nn.conv2d %p, %w1 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x1x1x40xf32>, tensor<1x1x40x8xf32>) -> tensor<?x1x1x8xf32>
  %a = nn.silu %f1 : tensor<?x1x1x8xf32> -> tensor<?x1x1x8xf32>
  %f2 = nn.conv2d %a, %w2 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x1x1x8xf32>, tensor<1x1x8x40xf32>) -> tensor<?x1x1x40xf32>
  %s = nn.sigmoid %f2 : tensor<?x1x1x40xf32> -> tensor<?x1x1x40xf32>
  %n = nn.batch_norm %x weight %g bias %b mean %m var %v {eps = 1.0e-05 : f64, layout = "NHWC"} : (tensor<?x5x5x40xf32>, tensor<40xf32>, tensor<40xf32>, tensor<40xf32>, tensor<40xf32>) -> tensor<?x5x5x40xf32>
  %p2 = nn.adaptive_avg_pool2d %n {output_size = array<i64: 1, 1>, layout = "NHWC"} : tensor<?x5x5x40xf32> -> tensor<?x1x1x40xf32>
  %f3 = nn.conv2d %p2, %w1 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x1x1x40xf32>, tensor<1x1x40x8xf32>) -> tensor<?x1x1x8xf32>
  func.return %s, %f3, %n : tensor<?x1x1x40xf32>, tensor<?x1x1x8xf32>, tensor<?x5x5x40xf32>
}

// (Without conv-chains the second fully connected layer is a stack of its own.)
// CHECK-LABEL: func.func @squeeze
// CHECK:         nn.stack "stack{{[0-9]+}}" (%x, %w1)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.adaptive_avg_pool2d
// CHECK-NEXT:      nn.conv2d
// CHECK-NEXT:      nn.silu
// CHECK-NEXT:      nn.yield
// CHECK:         nn.stack "stack{{[0-9]+}}" (%x, %g, %b, %m, %v)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.batch_norm
// CHECK-NEXT:      nn.adaptive_avg_pool2d
// CHECK:         nn.stack "stack{{[0-9]+}}" (%{{.*}}, %w1)
// CHECK-NEXT:    ^{{.*}}
// CHECK-NEXT:      nn.conv2d
// CHECK-NEXT:      nn.yield
