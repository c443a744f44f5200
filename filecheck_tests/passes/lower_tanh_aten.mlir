// RUN: bs-opt %s -p bs-lower-nn-to-loop | filecheck %s
// RUN: bs-opt %s -p 'default{cpu=skylake-avx512}' --target 'llvm-ir{cpu=skylake-avx512}' | filecheck %s --check-prefix=IR

// GELU's tanh form (no impl: PyTorch's GeluKernelImpl) is
// (0.5 * x) * (1 + tanh(beta * fma(kappa, x * x * x, x))), with PyTorch's vector
// tanh, Sleef's tanhf_u10 (`bs.impl = "sleef_u10"`), except on the last
// numel % 32 elements, whose scalar lambda calls libm's tanhf (`bs.impl = "libm"`).

func.func @gelu(%x: tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
  %r = nn.stack "k_gelu" (%x) : (tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
  ^bb0(%a: tensor<?x5x3xf32>):
    %y = nn.gelu %a {approximate = "tanh"} : tensor<?x5x3xf32> -> tensor<?x5x3xf32>
    nn.yield %y : tensor<?x5x3xf32>
  }
  func.return %r : tensor<?x5x3xf32>
}

// CHECK-LABEL: func.func @k_gelu
// CHECK:           %[[X:.+]] = loop.load %x[%i, %j, %k] : memref<?x5x3xf32>
// CHECK-NEXT:      %[[SQ:.+]] = arith.mulf %[[X]], %[[X]] : f32
// CHECK-NEXT:      %[[CUBE:.+]] = arith.mulf %[[SQ]], %[[X]] : f32
// CHECK-NEXT:      %[[BETA:.+]] = arith.constant 0.797884583 : f32
// CHECK-NEXT:      %[[KAPPA:.+]] = arith.constant 4.471500e-02 : f32
// CHECK-NEXT:      %[[SUM:.+]] = math.fma %[[KAPPA]], %[[CUBE]], %[[X]] : f32
// CHECK-NEXT:      %[[IN:.+]] = arith.mulf %[[BETA]], %[[SUM]] : f32
// CHECK-NEXT:      %[[HALF:.+]] = arith.constant 5.000000e-01 : f32
// CHECK-NEXT:      %[[HX:.+]] = arith.mulf %[[HALF]], %[[X]] : f32
// CHECK-NEXT:      %[[ONE:.+]] = arith.constant 1.000000e+00 : f32
// CHECK-NEXT:      %[[T:.+]] = math.tanh %[[IN]] {bs.impl = "sleef_u10"} : f32
// CHECK-NEXT:      %[[P:.+]] = arith.addf %[[ONE]], %[[T]] : f32
// CHECK-NEXT:      %[[VEC:.+]] = arith.mulf %[[HX]], %[[P]] : f32
// CHECK:           %[[TAIL:.+]] = arith.cmpi sge, %{{.+}}, %{{.+}} : index
// CHECK:           math.tanh %{{.+}} {bs.impl = "libm"} : f32
// CHECK:           %[[Y:.+]] = arith.select %[[TAIL]], %{{.+}}, %[[VEC]] : f32
// CHECK-NEXT:      loop.store %[[Y]], %out[%i, %j, %k] : f32, memref<?x5x3xf32>

// torch.tanh is MKL's vsTanh, which has no scalar tail: Sleef's tanh everywhere.
func.func @tanh(%x: tensor<?x4x8xf32>) -> tensor<?x4x8xf32> {
  %r = nn.stack "k_tanh" (%x) : (tensor<?x4x8xf32>) -> tensor<?x4x8xf32> {
  ^bb0(%a: tensor<?x4x8xf32>):
    %y = nn.tanh %a : tensor<?x4x8xf32> -> tensor<?x4x8xf32>
    nn.yield %y : tensor<?x4x8xf32>
  }
  func.return %r : tensor<?x4x8xf32>
}

// CHECK-LABEL: func.func @k_tanh
// CHECK:           %[[XT:.+]] = loop.load %x[%i, %j, %k] : memref<?x4x8xf32>
// CHECK-NEXT:      %[[TT:.+]] = math.tanh %[[XT]] {bs.impl = "sleef_u10"} : f32
// CHECK-NEXT:      loop.store %[[TT]], %out[%i, %j, %k] : f32, memref<?x4x8xf32>

// Sleef's tanh is vector code (double-float arithmetic in FMAs, two divisions);
// tanhf is called only in the vectors with tail lanes.
// IR-LABEL: define {{.*}}@k_gelu_p0(
// IR: @llvm.fma.v16f32(
// IR: fdiv <16 x float>
// IR: call float @tanhf(
// IR-LABEL: define {{.*}}@k_tanh_p0(
// IR-NOT: call float @tanhf
// IR: @llvm.fma.v16f32(
// IR: fdiv <16 x float>
// IR-NOT: call float @tanhf
// IR: declare
