// BN -> ReLU -> MaxPool (3x3, stride 2, padding 1), the stem of ResNet/DenseNet,
// at the `nn` level. The README walks through it pass by pass:
//   bs-opt examples/ir/bn_relu_maxpool.mlir -p bs-form-stacks
//   bs-opt examples/ir/bn_relu_maxpool.mlir -p default --target llvm-ir
func.func @forward(%x: tensor<?x37x13x13xf32>, %gamma: tensor<37xf32>, %beta: tensor<37xf32>,
                   %mean: tensor<37xf32>, %var: tensor<37xf32>) -> tensor<?x37x7x7xf32> {
  %bn = nn.batch_norm %x weight %gamma bias %beta mean %mean var %var {eps = 1.000000e-05 : f64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
  %r = nn.relu %bn : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %p = nn.max_pool2d %r {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
  func.return %p : tensor<?x37x7x7xf32>
}
