// RUN: bs-opt %s --split-input-file --verify-diagnostics | filecheck %s

// One invalid op per split. Each CHECK pair matches the split separator that
// bs-opt prints and, on the next line, the verifier's message.

func.func @f(%x: tensor<?x16x13x13xf32>, %w: tensor<8x8x3x3xf32>) {
  %0 = nn.conv2d %x, %w {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x16x13x13xf32>, tensor<8x8x3x3xf32>) -> tensor<?x8x13x13xf32>
  func.return
}

// CHECK: nn.conv2d: input has 16 channels, weight expects 8 (I=8 x groups=1)

// -----

func.func @f(%x: tensor<?x16x13x13xf32>, %w: tensor<8x8x3x3xf32>) {
  %0 = nn.conv2d %x, %w {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 3 : i64, layout = "NCHW"} : (tensor<?x16x13x13xf32>, tensor<8x8x3x3xf32>) -> tensor<?x8x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.conv2d: input has 16 channels, weight expects 24 (I=8 x groups=3)

// -----

func.func @f(%x: tensor<?x16x13x13xf32>, %w: tensor<5x8x3x3xf32>) {
  %0 = nn.conv2d %x, %w {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 2 : i64, layout = "NCHW"} : (tensor<?x16x13x13xf32>, tensor<5x8x3x3xf32>) -> tensor<?x5x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.conv2d: weight has 5 output channels, not divisible by groups=2

// -----

func.func @f(%x: tensor<?x16x13x13xf32>, %w: tensor<8x16x3x3xf32>, %b: tensor<7xf32>) {
  %0 = nn.conv2d %x, %w, %b {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x16x13x13xf32>, tensor<8x16x3x3xf32>, tensor<7xf32>) -> tensor<?x8x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.conv2d: bias has length 7, weight has 8 output channels

// -----

func.func @f(%x: tensor<?x16x13x13xf32>, %w: tensor<8x16x3x3xf32>) {
  %0 = nn.conv2d %x, %w {strides = array<i64: 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x16x13x13xf32>, tensor<8x16x3x3xf32>) -> tensor<?x8x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.conv2d: strides must have 2 values, got 1

// -----

func.func @f(%x: tensor<?x16x13x13xf32>, %w: tensor<8x16x3x3xf32>) {
  %0 = nn.conv2d %x, %w {strides = array<i32: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x16x13x13xf32>, tensor<8x16x3x3xf32>) -> tensor<?x8x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.conv2d: property strides must be an array<i64: ...>, got array<i32: 1, 1>

// -----

func.func @f(%x: tensor<?x16x13x13xf32>, %w: tensor<8x16x3x3xf32>) {
  %0 = nn.conv2d %x, %w {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NWHC"} : (tensor<?x16x13x13xf32>, tensor<8x16x3x3xf32>) -> tensor<?x8x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.conv2d: layout must be one of ['NCHW', 'NHWC'], got 'NWHC'

// -----

func.func @f(%x: tensor<?x16x13x13xf32>, %w: tensor<8x16x3x3xf32>) {
  %0 = nn.conv2d %x, %w {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x16x13x13xf32>, tensor<8x16x3x3xf32>) -> tensor<?x8x6x6xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.conv2d: result type tensor<?x8x6x6xf32> does not match inferred type tensor<?x8x7x7xf32>

// -----

func.func @f(%x: tensor<?x16x13x13xf32>, %w: tensor<8x16x3xf32>) {
  %0 = nn.conv2d %x, %w {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x16x13x13xf32>, tensor<8x16x3xf32>) -> tensor<?x8x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.conv2d: weight must have rank 4 or 5, got rank 3

// -----

func.func @f(%x: tensor<?x16x13x13xf32>, %w: tensor<8x16x3x3xf32>) {
  %0 = nn.conv2d %x, %w {strides = array<i64: 1, 1>, padding = array<i64: 1, -1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x16x13x13xf32>, tensor<8x16x3x3xf32>) -> tensor<?x8x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.conv2d: padding values must be >= 0, got [1, -1, 1, 1]

// -----

func.func @f(%x: tensor<?x37xf32>, %w: tensor<10x36xf32>) {
  %0 = nn.linear %x, %w : (tensor<?x37xf32>, tensor<10x36xf32>) -> tensor<?x10xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.linear: input has 37 features, weight expects 36 (K of [O, K])

// -----

func.func @f(%x: tensor<?x37xf32>, %w: tensor<10x37xf32>, %b: tensor<37xf32>) {
  %0 = nn.linear %x, %w, %b : (tensor<?x37xf32>, tensor<10x37xf32>, tensor<37xf32>) -> tensor<?x10xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.linear: bias has length 37, weight has 10 output features

// -----

// A packed weight is a 1x1 convolution's: [1, 1, K, O] or [O/B, 1, 1, K, B].
func.func @f(%x: tensor<?x5x37xf32>, %w: tensor<3x3x37x53xf32>) {
  %0 = nn.linear %x, %w : (tensor<?x5x37xf32>, tensor<3x3x37x53xf32>) -> tensor<?x5x53xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.linear: a packed weight is [1, 1, K, O] or [O/B, 1, 1, K, B], got [3, 3, 37, 53]

// -----

func.func @f(%x: tensor<?x5x37xf32>, %w: tensor<3x1x1x37x16xf32>) {
  %0 = nn.linear %x, %w : (tensor<?x5x37xf32>, tensor<3x1x1x37x16xf32>) -> tensor<?x5x53xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.linear: 53 output features do not fill 3 blocks of 16

// -----

func.func @f(%x: tensor<?x37x13x13xf32>, %p: tensor<37xf32>, %q: tensor<36xf32>) {
  %0 = nn.batch_norm %x weight %p bias %p mean %q var %p {eps = 1.0e-05 : f64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>, tensor<36xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.batch_norm: running_mean has length 36, input has 37 channels

// -----

func.func @f(%x: tensor<?x13x13x37xf32>, %p: tensor<37xf32>) {
  %0 = nn.batch_norm %x mean %p var %p {eps = 1.0e-05 : f64, layout = "NCHW"} : (tensor<?x13x13x37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x13x13x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.batch_norm: running_mean has length 37, input has 13 channels

// -----

func.func @f(%x: tensor<?x37x13xf32>, %p: tensor<37xf32>) {
  %0 = nn.batch_norm %x mean %p var %p {eps = 1.0e-05 : f64, layout = "NCHW"} : (tensor<?x37x13xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.batch_norm: input must have rank 2 or 4, got rank 3

// -----

func.func @f(%x: tensor<?x37xf32>, %p: tensor<37xf32>) {
  %0 = nn.batch_norm %x mean %p var %p {eps = -1.0e-05 : f64, layout = "NCHW"} : (tensor<?x37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.batch_norm: eps must be finite and >= 0, got -1e-05

// -----

func.func @f(%x: tensor<?x37xf32>) {
  %0 = nn.relu %x : tensor<?x37xf32> -> tensor<?x36xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.relu: result type tensor<?x36xf32> does not match inferred type tensor<?x37xf32>

// -----

func.func @f(%x: tensor<?x37xf16>) {
  %0 = nn.sigmoid %x : tensor<?x37xf16> -> tensor<?x37xf16>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.sigmoid: input must have element type f32, got f16

// -----

func.func @f(%x: tensor<?x37xf32>) {
  %0 = nn.gelu %x {approximate = "fast"} : tensor<?x37xf32> -> tensor<?x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.gelu: approximate must be one of ['none', 'tanh'], got 'fast'

// -----

func.func @f(%x: tensor<?x37xf32>) {
  %0 = nn.clamp %x : tensor<?x37xf32> -> tensor<?x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.clamp: needs at least one of min and max

// -----

func.func @f(%x: tensor<?x37xf32>) {
  %0 = nn.dropout %x {p = 1.0 : f64} : tensor<?x37xf32> -> tensor<?x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.dropout: p must be in [0, 1), got 1.0

// -----

func.func @f(%x: tensor<?x37xf32>) {
  %0 = nn.leaky_relu %x {negative_slope = 1.0 : f32} : tensor<?x37xf32> -> tensor<?x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.leaky_relu: property negative_slope must be an f64 float, got 1.000000e+00 : f32

// -----

func.func @f(%x: tensor<?x37x13x13xf32>, %y: tensor<37xf32>) {
  %0 = nn.add %x, %y : (tensor<?x37x13x13xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.add: operands lhs [?, 37, 13, 13] and rhs [37] do not broadcast: extents 13 and 37 on result axis 3

// -----

func.func @f(%x: tensor<?x37x13x13xf32>, %a: tensor<37xf32>) {
  %0 = nn.addcmul %x, %x, %a : (tensor<?x37x13x13xf32>, tensor<?x37x13x13xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.addcmul: operands tensor1 [?, 37, 13, 13] and tensor2 [37] do not broadcast: extents 13 and 37 on result axis 3

// -----

func.func @f(%x: tensor<?x37x13x13xf32>, %y: tensor<1x37x1x1xf32>) {
  %0 = nn.mul %x, %y : (tensor<?x37x13x13xf32>, tensor<1x37x1x1xf32>) -> tensor<1x37x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.mul: result type tensor<1x37x13x13xf32> does not match inferred type tensor<?x37x13x13xf32>

// -----

func.func @f(%x: tensor<?x37x13x13xf32>) {
  %0 = nn.max_pool2d %x {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 2, 2, 2, 2>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x8x8xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.max_pool2d: padding [2, 2, 2, 2] exceeds half the effective kernel: H padding 2 > 3 // 2

// -----

func.func @f(%x: tensor<?x37x13x13xf32>) {
  %0 = nn.max_pool2d %x {kernel = array<i64: 0, 3>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x6xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.max_pool2d: kernel values must be >= 1, got [0, 3]

// -----

func.func @f(%x: tensor<?x37x13x13xf32>) {
  %0 = nn.max_pool2d %x {kernel = array<i64: 3, 3>, strides = array<i64: 0, 2>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x6xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.max_pool2d: strides values must be >= 1, got [0, 2]

// -----

func.func @f(%x: tensor<?x37x13x13xf32>) {
  %0 = nn.max_pool2d %x {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = true, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x6x6xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.max_pool2d: result type tensor<?x37x6x6xf32> does not match inferred type tensor<?x37x7x7xf32>

// -----

func.func @f(%x: tensor<?x37x3x3xf32>) {
  %0 = nn.max_pool2d %x {kernel = array<i64: 5, 5>, strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x3x3xf32> -> tensor<?x37x1x1xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.max_pool2d: output H extent would be -1 (input 3, kernel 5, stride 1, padding 0+0, dilation 1)

// -----

func.func @f(%x: tensor<?x37x13x13xf32>) {
  %0 = nn.max_pool2d %x {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = 1 : i64, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.max_pool2d: property ceil_mode must be a bool (true or false), got 1 : i64

// -----

func.func @f(%x: tensor<?x37x13x13xf32>) {
  %0 = nn.avg_pool2d %x {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, divisor_override = 0 : i64, ceil_mode = false, count_include_pad = true, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.avg_pool2d: divisor_override must be >= 1, got 0

// -----

func.func @f(%x: tensor<?x37x13x13xf32>) {
  %0 = nn.adaptive_avg_pool2d %x {output_size = array<i64: 1>, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x1x1xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.adaptive_avg_pool2d: output_size must have 2 values, got 1

// -----

func.func @f(%x: tensor<?x37x13x13xf32>, %y: tensor<?x16x12x13xf32>) {
  %0 = nn.cat %x, %y {axis = 1 : i64} : (tensor<?x37x13x13xf32>, tensor<?x16x12x13xf32>) -> tensor<?x53x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.cat: inputs[1] has extent 12 on axis 2, expected 13

// -----

func.func @f(%x: tensor<?x37x13x13xf32>, %y: tensor<?x16x13xf32>) {
  %0 = nn.cat %x, %y {axis = 1 : i64} : (tensor<?x37x13x13xf32>, tensor<?x16x13xf32>) -> tensor<?x53x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.cat: inputs[1] has rank 3, inputs[0] has rank 4

// -----

func.func @f(%x: tensor<?x37x13x13xf32>) {
  %0 = nn.cat %x {axis = -3 : i64} : (tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.cat: axis must be in [0, 4), got -3

// -----

func.func @f(%x: tensor<?x37x13x13xf32>) {
  %0 = nn.flatten %x {start_dim = 2 : i64, end_dim = 1 : i64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.flatten: start_dim 2 comes after end_dim 1 (rank 4)

// -----

func.func @f(%x: tensor<?x37x13x13xf32>) {
  %0 = nn.flatten %x {start_dim = 1 : i64, end_dim = 4 : i64} : tensor<?x37x13x13xf32> -> tensor<?x6253xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.flatten: end_dim 4 is out of range for rank 4 [-4, 4)

// -----

func.func @f(%x: tensor<?x37x13x13xf32>) {
  %0 = nn.reshape %x : tensor<?x37x13x13xf32> -> tensor<?x37x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.reshape: input [?, 37, 13, 13] and result [?, 37, 13] have different element counts

// -----

func.func @f(%x: tensor<2x37x13x13xf32>) {
  %0 = nn.reshape %x : tensor<2x37x13x13xf32> -> tensor<37x2x13x14xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.reshape: input [2, 37, 13, 13] and result [37, 2, 13, 14] have different element counts

// -----

func.func @f(%x: tensor<?x37x13x13xf32>) {
  %0 = nn.mean %x {dims = array<i64: 2, 2>, keepdim = false} : tensor<?x37x13x13xf32> -> tensor<?x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.mean: dims [2, 2] has duplicates

// -----

func.func @f(%x: tensor<?x37x13x13xf32>) {
  %0 = nn.mean %x {dims = array<i64: 4>, keepdim = false} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.mean: dims must be in [0, 4), got 4

// -----

func.func @f(%x: tensor<?x10xf32>) {
  %0 = nn.softmax %x {axis = 2 : i64} : tensor<?x10xf32> -> tensor<?x10xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.softmax: axis must be in [0, 2), got 2

// -----

func.func @f(%x: tensor<?x10xf32>) {
  %0 = nn.stack "s0" (%x) : (tensor<?x10xf32>) -> tensor<?x10xf32> {
  ^bb0(%a: tensor<?x11xf32>):
    nn.yield %a : tensor<?x11xf32>
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.stack "s0": body block arguments have types (tensor<?x11xf32>), inputs have types (tensor<?x10xf32>)

// -----

func.func @f(%x: tensor<?x10xf32>) {
  %0 = nn.stack "s0" (%x) : (tensor<?x10xf32>) -> tensor<?x10xf32> {
  ^bb0(%a: tensor<?x10xf32>):
    %b = nn.mean %a {dims = array<i64: 1>, keepdim = true} : tensor<?x10xf32> -> tensor<?x1xf32>
    nn.yield %b : tensor<?x1xf32>
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.stack "s0": nn.yield has types (tensor<?x1xf32>), results have types (tensor<?x10xf32>)

// -----

func.func @f(%x: tensor<?x10xf32>) {
  %0 = nn.stack "s0" (%x) : (tensor<?x10xf32>) -> tensor<?x10xf32> {
  ^bb0(%a: tensor<?x10xf32>):
    %b = nn.relu %x : tensor<?x10xf32> -> tensor<?x10xf32>
    nn.yield %b : tensor<?x10xf32>
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: Operation using value defined out of its IsolatedFromAbove parent

// -----

func.func @f(%x: tensor<?x10xf32>) {
  nn.yield %x : tensor<?x10xf32>
}

// CHECK: {{// -+}}
// CHECK-NEXT: 'nn.yield' expects parent op 'nn.stack'

// -----

func.func @f(%x: tensor<?x10xf32>) {
  %0 = nn.stack "s0" (%x) : (tensor<?x10xf32>) -> tensor<?x10xf32> {
  ^bb0(%a: tensor<?x10xf32>):
    %b = nn.relu %a : tensor<?x10xf32> -> tensor<?x10xf32>
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: Operation nn.relu terminates block in single-block region but is not a terminator

// -----

func.func @f(%x: tensor<?x37x13x13xf32>) {
  %0 = nn.max_pool2d %x {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: property 'ceil_mode' expected in operation 'nn.max_pool2d'

// -----

func.func @f(%x: tensor<?x13x37xf32>, %w: tensor<13xf32>) {
  %0 = nn.layer_norm %x weight %w : tensor<13xf32> {eps = 1.0e-5 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.layer_norm: weight must have shape [37] (the innermost dim), got [13]

// -----

func.func @f(%x: tensor<?x13x?xf32>) {
  %0 = nn.layer_norm %x {eps = 1.0e-5 : f64} : tensor<?x13x?xf32> -> tensor<?x13x?xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.layer_norm: the normalised (innermost) dim must be static

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.layer_norm %x {eps = -1.0 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.layer_norm: eps must be finite and >= 0, got -1.0

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.permute %x {dims = array<i64: 0, 2, 2>} : tensor<?x13x37xf32> -> tensor<?x37x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.permute: dims must be a permutation of 0..2, got [0, 2, 2]

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.pad %x {low = array<i64: 1, 0, 0>, high = array<i64: 0, 0, 0>, value = 0.0 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.pad: dim 0 is dynamic and can't be padded

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.pad %x {low = array<i64: 0, -7>, high = array<i64: 0, -6>, value = 0.0 : f64} : tensor<?x13x37xf32> -> tensor<?x1x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.pad: low and high need one count per dim (3), got 2 and 2

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.pad %x {low = array<i64: 0, -7, 0>, high = array<i64: 0, -6, 0>, value = 0.0 : f64} : tensor<?x13x37xf32> -> tensor<?x1x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.pad: dim 1 of extent 13 cropped to 0 (needs at least 1)

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.pad %x {low = array<i64: 0, 1, 0>, high = array<i64: 0, 1, 0>, value = 0.0 : f64} : tensor<?x13x37xf32> -> tensor<?x14x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.pad: {{.*}}15

// -----

func.func @f(%x: tensor<?x12x5xf32>) {
  %0 = nn.group_norm %x {groups = 5 : i64, axis = 1 : i64, eps = 1.000000e-05 : f64} : tensor<?x12x5xf32> -> tensor<?x12x5xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.group_norm: 12 channels don't split into 5 groups

// -----

func.func @f(%x: tensor<?x12x5xf32>) {
  %0 = nn.group_norm %x {groups = 1 : i64, axis = 0 : i64, eps = 1.000000e-05 : f64} : tensor<?x12x5xf32> -> tensor<?x12x5xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.group_norm: axis 0 is the batch, not the channels

// -----

func.func @f(%x: tensor<?x12x5xf32>, %w: tensor<5xf32>) {
  %0 = nn.group_norm %x weight %w : tensor<5xf32> {groups = 3 : i64, axis = 1 : i64, eps = 1.000000e-05 : f64} : tensor<?x12x5xf32> -> tensor<?x12x5xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.group_norm: weight must have shape [12] (the channels), got [5]

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.roll %x {shifts = array<i64: 0, 13, 0>} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.roll: shift 13 of dim 1 must be in [0, 13)

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.roll %x {shifts = array<i64: 1, 0, 0>} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.roll: dim 0 is dynamic and can't be shifted

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.roll %x {shifts = array<i64: 0, 1>} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.roll: needs one shift per dim (3), got 2

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.resize_nearest %x {scale = array<i64: 1, 1, 1>, offset = array<i64: 0, 0, 0>, divisor = array<i64: 1, 2, 1>} : tensor<?x13x37xf32> -> tensor<?x27x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.resize_nearest: dim 1: output point 26 reads input point 13, past extent 13

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.resize_nearest %x {scale = array<i64: 1, 1, 1>, offset = array<i64: 0, 0, 0>, divisor = array<i64: 1, 0, 1>} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.resize_nearest: dim 1: needs scale >= 0, offset >= 0 and divisor >= 1, got 1, 0, 0

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.resize_nearest %x {scale = array<i64: 2, 1, 1>, offset = array<i64: 0, 0, 0>, divisor = array<i64: 1, 1, 1>} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.resize_nearest: dim 0: a dynamic dim keeps its extent and the identity map, got [?] -> [?], (2*i + 0) floordiv 1

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.resize_nearest %x {scale = array<i64: 1, 1>, offset = array<i64: 0, 0>, divisor = array<i64: 1, 1>} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.resize_nearest: scale, offset and divisor need one value per dim (3)

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.pow %x {exponent = 2.5 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.pow: exponent must be one of [-2.0, -1.0, -0.5, 0.5, 2.0, 3.0], got 2.5

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.l2_normalize %x {axis = 0 : i64, eps = 1.000000e-12 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.l2_normalize: axis 0 is dynamic

// -----

func.func @f(%x: tensor<?x13x37xf32>) {
  %0 = nn.l2_normalize %x {axis = 1 : i64, eps = -1.000000e+00 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.l2_normalize: eps must be finite and >= 0, got -1.0

// -----

func.func @f(%x: tensor<?x4x3x37xf32>, %rw: tensor<2x8xf32>, %cw: tensor<2x6xf32>) {
  %0 = nn.resize_bilinear %x, %rw, %cw {dims = array<i64: 1, 2>, rows = array<i64: 0, 0, 0, 1, 1, 2, 2, 3, 1, 1, 1, 2, 2, 3, 3, 4>, cols = array<i64: 0, 0, 0, 1, 1, 2, 1, 1, 1, 2, 2, 2>} : tensor<?x4x3x37xf32>, tensor<2x8xf32>, tensor<2x6xf32> -> tensor<?x8x6x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.resize_bilinear: rows reads a point outside [0, 4)

// -----

func.func @f(%x: tensor<?x4x3x37xf32>, %rw: tensor<2x8xf32>, %cw: tensor<2x6xf32>) {
  %0 = nn.resize_bilinear %x, %rw, %cw {dims = array<i64: 1, 2>, rows = array<i64: 0, 0, 0, 1, 1, 2, 2, 3, 1, 1, 1, 2, 2, 3, 3, 3>, cols = array<i64: 0, 0, 0, 1, 1, 2, 1, 1, 1, 2, 2, 2>} : tensor<?x4x3x37xf32>, tensor<2x8xf32>, tensor<2x6xf32> -> tensor<?x8x7x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.resize_bilinear: cols needs two input points per output point (14 values), got 12

// -----

func.func @f(%x: tensor<?x4x3x37xf32>, %rw: tensor<8x2xf32>, %cw: tensor<2x6xf32>) {
  %0 = nn.resize_bilinear %x, %rw, %cw {dims = array<i64: 1, 2>, rows = array<i64: 0, 0, 0, 1, 1, 2, 2, 3, 1, 1, 1, 2, 2, 3, 3, 3>, cols = array<i64: 0, 0, 0, 1, 1, 2, 1, 1, 1, 2, 2, 2>} : tensor<?x4x3x37xf32>, tensor<8x2xf32>, tensor<2x6xf32> -> tensor<?x8x6x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.resize_bilinear: rows weights must be 2x8, got [8, 2]

// -----

func.func @f(%x: tensor<?x4x3x37xf32>, %rw: tensor<2x8xf32>, %cw: tensor<2x6xf32>) {
  %0 = nn.resize_bilinear %x, %rw, %cw {dims = array<i64: 0, 2>, rows = array<i64: 0, 0, 0, 1, 1, 2, 2, 3, 1, 1, 1, 2, 2, 3, 3, 3>, cols = array<i64: 0, 0, 0, 1, 1, 2, 1, 1, 1, 2, 2, 2>} : tensor<?x4x3x37xf32>, tensor<2x8xf32>, tensor<2x6xf32> -> tensor<?x8x6x37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: nn.resize_bilinear: dims must be two ascending dims after the first of a rank-4 input, got [0, 2]
