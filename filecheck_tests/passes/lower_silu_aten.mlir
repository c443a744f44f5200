// RUN: bs-opt %s -p bs-lower-nn-to-loop | filecheck %s
// RUN: bs-opt %s -p 'default{cpu=skylake-avx512}' --target 'llvm-ir{cpu=skylake-avx512}' | filecheck %s --check-prefix=IR

// nn.silu (no impl: PyTorch's numerics) is x / (1 + exp(-x)), with PyTorch's
// vector exp, Sleef's expf_u10, except on
// the last numel % 32 elements, which PyTorch's scalar lambda computes with
// libm's expf (`bs.impl = "libm"`); the tail formula sees NaN elsewhere, so its
// libm calls are skipped in vectors without tail lanes. On x86 the vector exp is
// FMA code (`bs.exp_sleef_u10_normal`), with no call to expf. Its argument is
// raised to -87 first (NaN stays): exp(-87) is a normal float, and 1 + it is 1,
// as 1 + exp(y) for any y below, so the exp needs no subnormal path
// (`math.exp {bs.impl = "sleef_u10_normal"}`; with AVX-512, `bs.exp_sleef_u10_scalef`).

func.func @tail(%x: tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
  %r = nn.stack "k_tail" (%x) : (tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
  ^bb0(%a: tensor<?x5x3xf32>):
    %y = nn.silu %a : tensor<?x5x3xf32> -> tensor<?x5x3xf32>
    nn.yield %y : tensor<?x5x3xf32>
  }
  func.return %r : tensor<?x5x3xf32>
}

// CHECK-LABEL: func.func @k_tail
// CHECK:         loop.nest (%i, %j, %k) = (0, 0, 0) to (%batch, 5, 3) {
// CHECK-NEXT:      %[[X:.+]] = loop.load %x[%i, %j, %k] : memref<?x5x3xf32>
// CHECK-NEXT:      %[[ONE:.+]] = arith.constant 1.000000e+00 : f32
// CHECK-NEXT:      %[[NEG:.+]] = arith.negf %[[X]] : f32
// CHECK-NEXT:      %[[FLOOR:.+]] = arith.constant -8.700000e+01 : f32
// CHECK-NEXT:      %[[LOW:.+]] = arith.cmpf olt, %[[NEG]], %[[FLOOR]] : f32
// CHECK-NEXT:      %[[ARG:.+]] = arith.select %[[LOW]], %[[FLOOR]], %[[NEG]] : f32
// CHECK-NEXT:      %[[E:.+]] = math.exp %[[ARG]] {bs.impl = "sleef_u10_normal"} : f32
// CHECK-NEXT:      %[[DEN:.+]] = arith.addf %[[ONE]], %[[E]] : f32
// CHECK-NEXT:      %[[VEC:.+]] = arith.divf %[[X]], %[[DEN]] : f32
//   the tail: flat index >= numel - numel % 32, numel = batch * 15
// CHECK-NEXT:      %[[C15:.+]] = arith.constant 15 : index
// CHECK-NEXT:      %[[NUMEL:.+]] = arith.muli %batch, %[[C15]] : index
// CHECK-NEXT:      %[[C32:.+]] = arith.constant 32 : index
// CHECK-NEXT:      %[[REM:.+]] = arith.remsi %[[NUMEL]], %[[C32]] : index
// CHECK-NEXT:      %[[START:.+]] = arith.subi %[[NUMEL]], %[[REM]] : index
// CHECK:           %[[TAIL:.+]] = arith.cmpi sge, %{{.+}}, %[[START]] : index
// CHECK-NEXT:      %[[NAN:.+]] = arith.constant 0x7fc00000 : f32
// CHECK-NEXT:      %[[XT:.+]] = arith.select %[[TAIL]], %[[X]], %[[NAN]] : f32
// CHECK-NEXT:      %[[ONE2:.+]] = arith.constant 1.000000e+00 : f32
// CHECK-NEXT:      %[[NEGT:.+]] = arith.negf %[[XT]] : f32
// CHECK-NEXT:      %[[ET:.+]] = math.exp %[[NEGT]] {bs.impl = "libm"} : f32
// CHECK-NEXT:      %[[DENT:.+]] = arith.addf %[[ONE2]], %[[ET]] : f32
// CHECK-NEXT:      %[[SCA:.+]] = arith.divf %[[XT]], %[[DENT]] : f32
// CHECK-NEXT:      %[[Y:.+]] = arith.select %[[TAIL]], %[[SCA]], %[[VEC]] : f32
// CHECK-NEXT:      loop.store %[[Y]], %out[%i, %j, %k] : f32, memref<?x5x3xf32>

func.func @whole(%x: tensor<?x8x4xf32>) -> tensor<?x8x4xf32> {
  %r = nn.stack "k_whole" (%x) : (tensor<?x8x4xf32>) -> tensor<?x8x4xf32> {
  ^bb0(%a: tensor<?x8x4xf32>):
    %y = nn.silu %a : tensor<?x8x4xf32> -> tensor<?x8x4xf32>
    nn.yield %y : tensor<?x8x4xf32>
  }
  func.return %r : tensor<?x8x4xf32>
}

// 32 elements per batch: no tail for any batch, no libm exp.
// CHECK-LABEL: func.func @k_whole
// CHECK:           math.exp %{{.+}} {bs.impl = "sleef_u10_normal"} : f32
// CHECK-NOT:       math.exp
// CHECK:           loop.store

// The vector exp is FMA code; expf is called only in the vectors with tail lanes.
// IR-LABEL: define {{.*}}@k_tail_p0(
// IR: @llvm.fma.v16f32(
// IR: call float @expf(
// IR-LABEL: define {{.*}}@k_whole_p0(
// IR-NOT: call float @expf
// IR: @llvm.fma.v16f32(
//   with AVX-512, the scaling by 2**q is one vscalefps
// IR: @llvm.x86.avx512.mask.scalef.ps.512(
// IR-NOT: call float @expf
// IR: declare
