// RUN: bs-opt %s | filecheck %s
// RUN: bs-opt %s | bs-opt - | filecheck %s
// RUN: bs-opt %s --print-op-generic | bs-opt - | filecheck %s

// Every nn op in its custom form: parse, print, and parse the printed form again.

func.func @conv(%x: tensor<?x37x13x13xf32>, %w: tensor<16x37x3x3xf32>, %b: tensor<16xf32>, %wg: tensor<37x1x3x3xf32>, %xh: tensor<?x13x13x37xf32>, %wh: tensor<3x3x37x8xf32>) -> tensor<?x16x7x7xf32> {
  %0 = nn.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<16x37x3x3xf32>, tensor<16xf32>) -> tensor<?x16x7x7xf32>
  %1 = nn.conv2d %x, %wg {strides = array<i64: 1, 1>, padding = array<i64: 2, 2, 2, 2>, dilation = array<i64: 2, 2>, groups = 37 : i64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37x1x3x3xf32>) -> tensor<?x37x13x13xf32>
  %2 = nn.conv2d %xh, %wh {strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x13x13x37xf32>, tensor<3x3x37x8xf32>) -> tensor<?x6x6x8xf32>
  func.return %0 : tensor<?x16x7x7xf32>
}

// CHECK-LABEL: func.func @conv
// CHECK-NEXT:    %0 = nn.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<16x37x3x3xf32>, tensor<16xf32>) -> tensor<?x16x7x7xf32>
// CHECK-NEXT:    %1 = nn.conv2d %x, %wg {strides = array<i64: 1, 1>, padding = array<i64: 2, 2, 2, 2>, dilation = array<i64: 2, 2>, groups = 37 : i64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37x1x3x3xf32>) -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %2 = nn.conv2d %xh, %wh {strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NHWC"} : (tensor<?x13x13x37xf32>, tensor<3x3x37x8xf32>) -> tensor<?x6x6x8xf32>

func.func @linear(%x: tensor<?x37xf32>, %w: tensor<10x37xf32>, %b: tensor<10xf32>, %x3: tensor<?x5x37xf32>) -> tensor<?x10xf32> {
  %0 = nn.linear %x, %w, %b : (tensor<?x37xf32>, tensor<10x37xf32>, tensor<10xf32>) -> tensor<?x10xf32>
  %1 = nn.linear %x3, %w : (tensor<?x5x37xf32>, tensor<10x37xf32>) -> tensor<?x5x10xf32>
  func.return %0 : tensor<?x10xf32>
}

// CHECK-LABEL: func.func @linear
// CHECK-NEXT:    %0 = nn.linear %x, %w, %b : (tensor<?x37xf32>, tensor<10x37xf32>, tensor<10xf32>) -> tensor<?x10xf32>
// CHECK-NEXT:    %1 = nn.linear %x3, %w : (tensor<?x5x37xf32>, tensor<10x37xf32>) -> tensor<?x5x10xf32>

func.func @batch_norm(%x: tensor<?x37x13x13xf32>, %xh: tensor<?x13x13x37xf32>, %x2: tensor<?x37xf32>, %p: tensor<37xf32>) {
  %0 = nn.batch_norm %x weight %p bias %p mean %p var %p {eps = 1.000000e-05 : f64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
  %1 = nn.batch_norm %x mean %p var %p {eps = 1.000000e-03 : f64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
  %2 = nn.batch_norm %xh weight %p mean %p var %p {eps = 1.001000e-05 : f64, layout = "NHWC"} : (tensor<?x13x13x37xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x13x13x37xf32>
  %3 = nn.batch_norm %x2 bias %p mean %p var %p {eps = 1.000000e-05 : f64, layout = "NHWC"} : (tensor<?x37xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37xf32>
  func.return
}

// CHECK-LABEL: func.func @batch_norm
// CHECK-NEXT:    %0 = nn.batch_norm %x weight %p bias %p mean %p var %p {eps = 1.000000e-05 : f64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %1 = nn.batch_norm %x mean %p var %p {eps = 1.000000e-03 : f64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %2 = nn.batch_norm %xh weight %p mean %p var %p {eps = 1.001000e-05 : f64, layout = "NHWC"} : (tensor<?x13x13x37xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x13x13x37xf32>
// CHECK-NEXT:    %3 = nn.batch_norm %x2 bias %p mean %p var %p {eps = 1.000000e-05 : f64, layout = "NHWC"} : (tensor<?x37xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37xf32>

func.func @unary(%x: tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32> {
  %0 = nn.relu %x : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %1 = nn.sigmoid %0 : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %2 = nn.tanh %1 : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %3 = nn.silu %2 : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %4 = nn.hardswish %3 : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %5 = nn.hardsigmoid %4 : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %6 = nn.gelu %5 {approximate = "none"} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %7 = nn.gelu %6 {approximate = "tanh"} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %8 = nn.relu %7 : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %9 = nn.clamp %8 {min = 0.0 : f64, max = 6.0 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %10 = nn.clamp %9 {min = -1.5 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %11 = nn.clamp %10 {max = 0.1 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %12 = nn.leaky_relu %11 {negative_slope = 0.01 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %13 = nn.dropout %12 {p = 0.5 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %14 = nn.identity %13 : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  func.return %14 : tensor<?x37x13x13xf32>
}

// CHECK-LABEL: func.func @unary
// CHECK-NEXT:    %0 = nn.relu %x : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %1 = nn.sigmoid %0 : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %2 = nn.tanh %1 : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %3 = nn.silu %2 : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %4 = nn.hardswish %3 : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %5 = nn.hardsigmoid %4 : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %6 = nn.gelu %5 {approximate = "none"} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %7 = nn.gelu %6 {approximate = "tanh"} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %8 = nn.relu %7 : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %9 = nn.clamp %8 {min = 0.000000e+00 : f64, max = 6.000000e+00 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %10 = nn.clamp %9 {min = -1.500000e+00 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %11 = nn.clamp %10 {max = 1.000000e-01 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %12 = nn.leaky_relu %11 {negative_slope = 1.000000e-02 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %13 = nn.dropout %12 {p = 5.000000e-01 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %14 = nn.identity %13 : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>

func.func @binary(%x: tensor<?x37x13x13xf32>, %c: tensor<1x37x1x1xf32>, %v: tensor<37x1x1xf32>, %s: tensor<1x37x13x13xf32>, %r: tensor<13xf32>) {
  %0 = nn.add %x, %c : (tensor<?x37x13x13xf32>, tensor<1x37x1x1xf32>) -> tensor<?x37x13x13xf32>
  %1 = nn.mul %v, %x : (tensor<37x1x1xf32>, tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>
  %2 = nn.add %s, %x : (tensor<1x37x13x13xf32>, tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>
  %3 = nn.mul %c, %r : (tensor<1x37x1x1xf32>, tensor<13xf32>) -> tensor<1x37x1x13xf32>
  %4 = nn.sub %x, %c : (tensor<?x37x13x13xf32>, tensor<1x37x1x1xf32>) -> tensor<?x37x13x13xf32>
  %5 = nn.div %v, %x : (tensor<37x1x1xf32>, tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>
  %6 = nn.addcmul %c, %v, %x : (tensor<1x37x1x1xf32>, tensor<37x1x1xf32>, tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>
  func.return
}

// CHECK-LABEL: func.func @binary
// CHECK-NEXT:    %0 = nn.add %x, %c : (tensor<?x37x13x13xf32>, tensor<1x37x1x1xf32>) -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %1 = nn.mul %v, %x : (tensor<37x1x1xf32>, tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %2 = nn.add %s, %x : (tensor<1x37x13x13xf32>, tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %3 = nn.mul %c, %r : (tensor<1x37x1x1xf32>, tensor<13xf32>) -> tensor<1x37x1x13xf32>
// CHECK-NEXT:    %4 = nn.sub %x, %c : (tensor<?x37x13x13xf32>, tensor<1x37x1x1xf32>) -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %5 = nn.div %v, %x : (tensor<37x1x1xf32>, tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %6 = nn.addcmul %c, %v, %x : (tensor<1x37x1x1xf32>, tensor<37x1x1xf32>, tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>

func.func @pool(%x: tensor<?x37x13x13xf32>, %xh: tensor<?x13x13x37xf32>) {
  %0 = nn.max_pool2d %x {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = true, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
  %1 = nn.max_pool2d %x {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x6x6xf32>
  %2 = nn.max_pool2d %xh {kernel = array<i64: 3, 3>, strides = array<i64: 1, 1>, padding = array<i64: 2, 2, 2, 2>, dilation = array<i64: 2, 2>, ceil_mode = false, layout = "NHWC"} : tensor<?x13x13x37xf32> -> tensor<?x13x13x37xf32>
  %3 = nn.avg_pool2d %x {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, ceil_mode = false, count_include_pad = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
  %4 = nn.avg_pool2d %xh {kernel = array<i64: 2, 3>, strides = array<i64: 2, 2>, padding = array<i64: 0, 1, 0, 1>, ceil_mode = true, count_include_pad = true, divisor_override = 5 : i64, layout = "NHWC"} : tensor<?x13x13x37xf32> -> tensor<?x7x7x37xf32>
  %5 = nn.adaptive_avg_pool2d %x {output_size = array<i64: 1, 1>, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x1x1xf32>
  %6 = nn.adaptive_avg_pool2d %xh {output_size = array<i64: 5, 7>, layout = "NHWC"} : tensor<?x13x13x37xf32> -> tensor<?x5x7x37xf32>
  func.return
}

// CHECK-LABEL: func.func @pool
// CHECK-NEXT:    %0 = nn.max_pool2d %x {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = true, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
// CHECK-NEXT:    %1 = nn.max_pool2d %x {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x6x6xf32>
// CHECK-NEXT:    %2 = nn.max_pool2d %xh {kernel = array<i64: 3, 3>, strides = array<i64: 1, 1>, padding = array<i64: 2, 2, 2, 2>, dilation = array<i64: 2, 2>, ceil_mode = false, layout = "NHWC"} : tensor<?x13x13x37xf32> -> tensor<?x13x13x37xf32>
// CHECK-NEXT:    %3 = nn.avg_pool2d %x {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, ceil_mode = false, count_include_pad = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
// CHECK-NEXT:    %4 = nn.avg_pool2d %xh {kernel = array<i64: 2, 3>, strides = array<i64: 2, 2>, padding = array<i64: 0, 1, 0, 1>, ceil_mode = true, count_include_pad = true, divisor_override = 5 : i64, layout = "NHWC"} : tensor<?x13x13x37xf32> -> tensor<?x7x7x37xf32>
// CHECK-NEXT:    %5 = nn.adaptive_avg_pool2d %x {output_size = array<i64: 1, 1>, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x1x1xf32>
// CHECK-NEXT:    %6 = nn.adaptive_avg_pool2d %xh {output_size = array<i64: 5, 7>, layout = "NHWC"} : tensor<?x13x13x37xf32> -> tensor<?x5x7x37xf32>

func.func @shape(%x: tensor<?x37x13x13xf32>, %y: tensor<?x16x13x13xf32>, %p: tensor<?x37x1x1xf32>, %z: tensor<?x10xf32>) {
  %0 = nn.cat %x, %y, %x {axis = 1 : i64} : (tensor<?x37x13x13xf32>, tensor<?x16x13x13xf32>, tensor<?x37x13x13xf32>) -> tensor<?x90x13x13xf32>
  %1 = nn.cat %x {axis = 0 : i64} : (tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>
  %2 = nn.flatten %p {start_dim = 1 : i64, end_dim = -1 : i64} : tensor<?x37x1x1xf32> -> tensor<?x37xf32>
  %3 = nn.flatten %x {start_dim = 0 : i64, end_dim = 1 : i64} : tensor<?x37x13x13xf32> -> tensor<?x13x13xf32>
  %4 = nn.reshape %p : tensor<?x37x1x1xf32> -> tensor<?x37xf32>
  %5 = nn.mean %x {dims = array<i64: 2, 3>, keepdim = true} : tensor<?x37x13x13xf32> -> tensor<?x37x1x1xf32>
  %6 = nn.mean %x {dims = array<i64: 3, 2>, keepdim = false} : tensor<?x37x13x13xf32> -> tensor<?x37xf32>
  %7 = nn.softmax %z {axis = 1 : i64} : tensor<?x10xf32> -> tensor<?x10xf32>
  %8 = nn.permute %x {dims = array<i64: 0, 2, 3, 1>} : tensor<?x37x13x13xf32> -> tensor<?x13x13x37xf32>
  %9 = nn.pad %x {low = array<i64: 0, 0, 1, -2>, high = array<i64: 0, 3, 2, -1>, value = -2.500000e-01 : f64} : tensor<?x37x13x13xf32> -> tensor<?x40x16x10xf32>
  %10 = nn.roll %x {shifts = array<i64: 0, 0, 3, 12>} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %11 = nn.resize_nearest %x {scale = array<i64: 1, 1, 1, 2>, offset = array<i64: 0, 0, 0, 1>, divisor = array<i64: 1, 1, 3, 1>} : tensor<?x37x13x13xf32> -> tensor<?x37x39x6xf32>
  %12 = nn.pow %x {exponent = -5.000000e-01 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %13 = nn.sum %x {dims = array<i64: 1>, keepdim = false} : tensor<?x37x13x13xf32> -> tensor<?x13x13xf32>
  func.return
}

// CHECK-LABEL: func.func @shape
// CHECK-NEXT:    %0 = nn.cat %x, %y, %x {axis = 1 : i64} : (tensor<?x37x13x13xf32>, tensor<?x16x13x13xf32>, tensor<?x37x13x13xf32>) -> tensor<?x90x13x13xf32>
// CHECK-NEXT:    %1 = nn.cat %x {axis = 0 : i64} : (tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %2 = nn.flatten %p {start_dim = 1 : i64, end_dim = -1 : i64} : tensor<?x37x1x1xf32> -> tensor<?x37xf32>
// CHECK-NEXT:    %3 = nn.flatten %x {start_dim = 0 : i64, end_dim = 1 : i64} : tensor<?x37x13x13xf32> -> tensor<?x13x13xf32>
// CHECK-NEXT:    %4 = nn.reshape %p : tensor<?x37x1x1xf32> -> tensor<?x37xf32>
// CHECK-NEXT:    %5 = nn.mean %x {dims = array<i64: 2, 3>, keepdim = true} : tensor<?x37x13x13xf32> -> tensor<?x37x1x1xf32>
// CHECK-NEXT:    %6 = nn.mean %x {dims = array<i64: 3, 2>, keepdim = false} : tensor<?x37x13x13xf32> -> tensor<?x37xf32>
// CHECK-NEXT:    %7 = nn.softmax %z {axis = 1 : i64} : tensor<?x10xf32> -> tensor<?x10xf32>
// CHECK-NEXT:    %8 = nn.permute %x {dims = array<i64: 0, 2, 3, 1>} : tensor<?x37x13x13xf32> -> tensor<?x13x13x37xf32>
// CHECK-NEXT:    %9 = nn.pad %x {low = array<i64: 0, 0, 1, -2>, high = array<i64: 0, 3, 2, -1>, value = -2.500000e-01 : f64} : tensor<?x37x13x13xf32> -> tensor<?x40x16x10xf32>
// CHECK-NEXT:    %10 = nn.roll %x {shifts = array<i64: 0, 0, 3, 12>} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %11 = nn.resize_nearest %x {scale = array<i64: 1, 1, 1, 2>, offset = array<i64: 0, 0, 0, 1>, divisor = array<i64: 1, 1, 3, 1>} : tensor<?x37x13x13xf32> -> tensor<?x37x39x6xf32>
// CHECK-NEXT:    %12 = nn.pow %x {exponent = -5.000000e-01 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %13 = nn.sum %x {dims = array<i64: 1>, keepdim = false} : tensor<?x37x13x13xf32> -> tensor<?x13x13xf32>

func.func @norm(%x: tensor<?x13x37xf32>, %w: tensor<37xf32>, %b: tensor<37xf32>) {
  %0 = nn.layer_norm %x weight %w : tensor<37xf32> bias %b : tensor<37xf32> {eps = 1.000000e-05 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  %1 = nn.layer_norm %x {eps = 1.000000e-06 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  %2 = nn.layer_norm %x bias %b : tensor<37xf32> {eps = 0.000000e+00 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  %3 = nn.layer_norm %x weight %w : tensor<37xf32> {eps = 1.000000e-03 : f64, impl = "eigen"} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  %4 = nn.group_norm %x weight %w : tensor<37xf32> {groups = 1 : i64, axis = 2 : i64, eps = 1.000000e-05 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  %5 = nn.l2_normalize %x {axis = 1 : i64, eps = 1.000000e-12 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
  func.return
}

// CHECK-LABEL: func.func @norm
// CHECK-NEXT:    %0 = nn.layer_norm %x weight %w : tensor<37xf32> bias %b : tensor<37xf32> {eps = 1.000000e-05 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
// CHECK-NEXT:    %1 = nn.layer_norm %x {eps = 1.000000e-06 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
// CHECK-NEXT:    %2 = nn.layer_norm %x bias %b : tensor<37xf32> {eps = 0.000000e+00 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
// CHECK-NEXT:    %3 = nn.layer_norm %x weight %w : tensor<37xf32> {eps = 1.000000e-03 : f64, impl = "eigen"} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
// CHECK:         %4 = nn.group_norm %x weight %w : tensor<37xf32> {groups = 1 : i64, axis = 2 : i64, eps = 1.000000e-05 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>
// CHECK-NEXT:    %5 = nn.l2_normalize %x {axis = 1 : i64, eps = 1.000000e-12 : f64} : tensor<?x13x37xf32> -> tensor<?x13x37xf32>

func.func @stack(%x: tensor<?x37x13x13xf32>, %p: tensor<37xf32>) -> (tensor<?x37x13x13xf32>, tensor<?x37x7x7xf32>) {
  %r:2 = nn.stack "stack0" (%x, %p) : (tensor<?x37x13x13xf32>, tensor<37xf32>) -> (tensor<?x37x13x13xf32>, tensor<?x37x7x7xf32>) {
  ^bb0(%a: tensor<?x37x13x13xf32>, %m: tensor<37xf32>):
    %b = nn.batch_norm %a mean %m var %m {eps = 1.000000e-05 : f64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
    %c = nn.relu %b : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
    %d = nn.max_pool2d %c {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
    nn.yield %c, %d : tensor<?x37x13x13xf32>, tensor<?x37x7x7xf32>
  }
  %s = nn.stack "stack1" (%x) attributes {note = "extra"} : (tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32> {
  ^bb0(%a: tensor<?x37x13x13xf32>):
    nn.yield %a : tensor<?x37x13x13xf32>
  }
  func.return %r#0, %r#1 : tensor<?x37x13x13xf32>, tensor<?x37x7x7xf32>
}

// CHECK-LABEL: func.func @stack
// CHECK-NEXT:    %r, %r_1 = nn.stack "stack0" (%x, %p) : (tensor<?x37x13x13xf32>, tensor<37xf32>) -> (tensor<?x37x13x13xf32>, tensor<?x37x7x7xf32>) {
// CHECK-NEXT:    ^bb0(%a: tensor<?x37x13x13xf32>, %m: tensor<37xf32>):
// CHECK-NEXT:      %b = nn.batch_norm %a mean %m var %m {eps = 1.000000e-05 : f64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
// CHECK-NEXT:      %c = nn.relu %b : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
// CHECK-NEXT:      %d = nn.max_pool2d %c {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
// CHECK-NEXT:      nn.yield %c, %d : tensor<?x37x13x13xf32>, tensor<?x37x7x7xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    %s = nn.stack "stack1" (%x) attributes {note = "extra"} : (tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32> {
// CHECK-NEXT:    ^bb0(%{{.*}}: tensor<?x37x13x13xf32>):
// CHECK-NEXT:      nn.yield %{{.*}} : tensor<?x37x13x13xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return %r, %r_1 : tensor<?x37x13x13xf32>, tensor<?x37x7x7xf32>

func.func @library(%x: tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32> {
  %t = nn.library "torch.transpose"(%x) : (tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>
  nn.library "method:size"(%t) : (tensor<?x37x13x13xf32>) -> ()
  func.return %t : tensor<?x37x13x13xf32>
}

// CHECK-LABEL: func.func @library
// CHECK-NEXT:    %t = nn.library "torch.transpose"(%x) : (tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    nn.library "method:size"(%t) : (tensor<?x37x13x13xf32>) -> ()

// Bilinear 4 -> 8 rows and 3 -> 6 columns of a channels-last tensor: two input
// points per output point (all first points, then all second points).
func.func @bilinear(%x: tensor<?x4x3x37xf32>, %rw: tensor<2x8xf32>, %cw: tensor<2x6xf32>) {
  %0 = nn.resize_bilinear %x, %rw, %cw {dims = array<i64: 1, 2>, rows = array<i64: 0, 0, 0, 1, 1, 2, 2, 3, 1, 1, 1, 2, 2, 3, 3, 3>, cols = array<i64: 0, 0, 0, 1, 1, 2, 1, 1, 1, 2, 2, 2>} : tensor<?x4x3x37xf32>, tensor<2x8xf32>, tensor<2x6xf32> -> tensor<?x8x6x37xf32>
  func.return
}

// CHECK-LABEL: func.func @bilinear
// CHECK-NEXT:    %0 = nn.resize_bilinear %x, %rw, %cw {dims = array<i64: 1, 2>, rows = array<i64: 0, 0, 0, 1, 1, 2, 2, 3, 1, 1, 1, 2, 2, 3, 3, 3>, cols = array<i64: 0, 0, 0, 1, 1, 2, 1, 1, 1, 2, 2, 2>} : tensor<?x4x3x37xf32>, tensor<2x8xf32>, tensor<2x6xf32> -> tensor<?x8x6x37xf32>
