// RUN: bs-opt %s -p bs-lower-nn-to-loop | filecheck %s
// RUN: bs-opt %s -p 'default{cpu=skylake-avx512}' --target 'llvm-ir{cpu=skylake-avx512}' | filecheck %s --check-prefix=IR

// nn.gelu {approximate = "none"} (PyTorch's exact GELU, which eager PyTorch hands
// to oneDNN for contiguous tensors) is (x * (1 + erf(x * sqrt 1/2))) * 0.5 with
// the erf marked `bs.impl = "onednn"`; on x86 the vector erf is oneDNN's minimax
// polynomial computed from x (`bs.erf_onednn`, coefficients by vpermi2ps), FMA
// code with no call to erff and no scalar tail.

func.func @gelu(%x: tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
  %r = nn.stack "k_gelu" (%x) : (tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
  ^bb0(%a: tensor<?x5x3xf32>):
    %y = nn.gelu %a {approximate = "none"} : tensor<?x5x3xf32> -> tensor<?x5x3xf32>
    nn.yield %y : tensor<?x5x3xf32>
  }
  func.return %r : tensor<?x5x3xf32>
}

// CHECK-LABEL: func.func @k_gelu
// CHECK:         %[[X:.+]] = loop.load %x[%i, %j, %k] : memref<?x5x3xf32>
// CHECK-NEXT:    %[[C:.+]] = arith.constant 0.707106769 : f32
// CHECK-NEXT:    %[[Y:.+]] = arith.mulf %[[X]], %[[C]] : f32
// CHECK-NEXT:    %[[ONE:.+]] = arith.constant 1.000000e+00 : f32
// CHECK-NEXT:    %[[E:.+]] = math.erf %[[Y]] {bs.impl = "onednn"} : f32
// CHECK-NEXT:    %[[S:.+]] = arith.addf %[[ONE]], %[[E]] : f32
// CHECK-NEXT:    %[[P:.+]] = arith.mulf %[[X]], %[[S]] : f32
// CHECK-NEXT:    %[[H:.+]] = arith.constant 5.000000e-01 : f32
// CHECK-NEXT:    %{{.+}} = arith.mulf %[[P]], %[[H]] : f32
// CHECK-NOT:     arith.cmpi

// IR-NOT:        erff
// IR:            llvm.x86.avx512.vpermi2var.ps.512
// IR:            llvm.fma.v16f32
// IR-NOT:        erff
