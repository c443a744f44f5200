// RUN: bs-opt %s -p bs-lower-nn-to-loop | filecheck %s
// RUN: bs-opt %s -p 'default{cpu=skylake-avx512}' --target 'llvm-ir{cpu=skylake-avx512}' | filecheck %s --check-prefix=IR

// nn.sigmoid {impl = "eigen"} lowers to TensorFlow's CPU sigmoid (Eigen's
// scalar_logistic_op<float> packet path, multiply and add rounded separately):
// x < -104 gives 0; h = min(x, 16.6355324) / 2; m = floor(h * log2(e) + 1/2)
// (round-to-integer with 1.5 * 2^23, then a correction); r = h - m * ln 2 in two
// parts; p = degree-5 polynomial; e = (p * 2^m)^2 with 2^m built from m's bits,
// a denormal e flushed like TensorFlow's kernels; e / (1 + e). Eigen's scalar
// path (exp(min(x, 16.6355324)), e / (1 + e)) covers the last numel % 8
// elements, which a flat-index compare selects; when numel is a multiple of 8
// for every batch there is no tail.

func.func @tail(%x: tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
  %r = nn.stack "k_tail" (%x) : (tensor<?x5x3xf32>) -> tensor<?x5x3xf32> {
  ^bb0(%a: tensor<?x5x3xf32>):
    %y = nn.sigmoid %a {impl = "eigen"} : tensor<?x5x3xf32> -> tensor<?x5x3xf32>
    nn.yield %y : tensor<?x5x3xf32>
  }
  func.return %r : tensor<?x5x3xf32>
}

// CHECK-LABEL: func.func @k_tail
// CHECK:         loop.nest (%i, %j, %k) = (0, 0, 0) to (%batch, 5, 3) {
// CHECK-NEXT:      %[[X:.+]] = loop.load %x[%i, %j, %k] : memref<?x5x3xf32>
// CHECK-NEXT:      %[[LO:.+]] = arith.constant -1.040000e+02 : f32
// CHECK-NEXT:      %[[ZERO:.+]] = arith.cmpf olt, %[[X]], %[[LO]] : f32
// CHECK-NEXT:      %[[HI:.+]] = arith.constant 16.6355324 : f32
// CHECK-NEXT:      %[[GT:.+]] = arith.cmpf ogt, %[[X]], %[[HI]] : f32
// CHECK-NEXT:      %[[XC:.+]] = arith.select %[[GT]], %[[HI]], %[[X]] : f32
// CHECK-NEXT:      %[[HALF:.+]] = arith.constant 5.000000e-01 : f32
// CHECK-NEXT:      %[[H:.+]] = arith.mulf %[[XC]], %[[HALF]] : f32
// CHECK-NEXT:      %[[LOG2E:.+]] = arith.constant 1.44269502 : f32
// CHECK-NEXT:      %[[HALF2:.+]] = arith.constant 5.000000e-01 : f32
// CHECK-NEXT:      %[[T0:.+]] = arith.mulf %[[H]], %[[LOG2E]] : f32
// CHECK-NEXT:      %[[T:.+]] = arith.addf %[[T0]], %[[HALF2]] : f32
// CHECK-NEXT:      %[[MAGIC:.+]] = arith.constant 0x4B400000 : f32
// CHECK-NEXT:      %[[BIG:.+]] = arith.addf %[[T]], %[[MAGIC]] : f32
// CHECK-NEXT:      %[[MAGIC2:.+]] = arith.constant 0x4B400000 : f32
// CHECK-NEXT:      %[[RN:.+]] = arith.subf %[[BIG]], %[[MAGIC2]] : f32
// CHECK-NEXT:      %[[UP:.+]] = arith.cmpf ogt, %[[RN]], %[[T]] : f32
// CHECK:           %[[M:.+]] = arith.subf %[[RN]], %{{.+}} : f32
// CHECK-NEXT:      %[[C1:.+]] = arith.constant -0.693359375 : f32
// CHECK-NEXT:      %[[MC1:.+]] = arith.mulf %[[M]], %[[C1]] : f32
// CHECK-NEXT:      %{{.+}} = arith.addf %[[MC1]], %[[H]] : f32
// CHECK-NEXT:      %[[C2:.+]] = arith.constant 0.000212194442 : f32
// CHECK-NOT:       math.exp
// CHECK:           %[[MIN:.+]] = arith.constant 1.17549435e-38 : f32
// CHECK-NEXT:      %[[DENORMAL:.+]] = arith.cmpf olt, %[[E2:.+]], %[[MIN]] : f32
// CHECK-NEXT:      %[[FZ:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:      %[[E:.+]] = arith.select %[[DENORMAL]], %[[FZ]], %[[E2]] : f32
// CHECK-NEXT:      %[[Z:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:      %[[ONE:.+]] = arith.constant 1.000000e+00 : f32
// CHECK-NEXT:      %[[DEN:.+]] = arith.addf %[[ONE]], %[[E]] : f32
// CHECK-NEXT:      %[[Q:.+]] = arith.divf %[[E]], %[[DEN]] : f32
// CHECK-NEXT:      %[[PACKET:.+]] = arith.select %[[ZERO]], %[[Z]], %[[Q]] : f32
//   the tail: flat index >= numel - numel % 8, numel = batch * 15
// CHECK-NEXT:      %[[C15:.+]] = arith.constant 15 : index
// CHECK-NEXT:      %[[NUMEL:.+]] = arith.muli %batch, %[[C15]] : index
// CHECK-NEXT:      %[[C8:.+]] = arith.constant 8 : index
// CHECK-NEXT:      %[[REM:.+]] = arith.remsi %[[NUMEL]], %[[C8]] : index
// CHECK-NEXT:      %[[START:.+]] = arith.subi %[[NUMEL]], %[[REM]] : index
// CHECK:           %[[FLAT:.+]] = arith.addi %{{.+}}, %k : index
// CHECK-NEXT:      %[[TAIL:.+]] = arith.cmpi sge, %[[FLAT]], %[[START]] : index
// CHECK-NEXT:      %[[HI2:.+]] = arith.constant 16.6355324 : f32
// CHECK-NEXT:      %[[GT2:.+]] = arith.cmpf ogt, %[[X]], %[[HI2]] : f32
// CHECK-NEXT:      %[[XC2:.+]] = arith.select %[[GT2]], %[[HI2]], %[[X]] : f32
// CHECK-NEXT:      %[[EXP:.+]] = math.exp %[[XC2]] : f32
// CHECK:           %[[SCALAR:.+]] = arith.divf
// CHECK-NEXT:      %[[Y:.+]] = arith.select %[[TAIL]], %[[SCALAR]], %[[PACKET]] : f32
// CHECK-NEXT:      loop.store %[[Y]], %out[%i, %j, %k] : f32, memref<?x5x3xf32>

func.func @whole(%x: tensor<?x4x8xf32>) -> tensor<?x4x8xf32> {
  %r = nn.stack "k_whole" (%x) : (tensor<?x4x8xf32>) -> tensor<?x4x8xf32> {
  ^bb0(%a: tensor<?x4x8xf32>):
    %y = nn.silu %a {impl = "eigen"} : tensor<?x4x8xf32> -> tensor<?x4x8xf32>
    nn.yield %y : tensor<?x4x8xf32>
  }
  func.return %r : tensor<?x4x8xf32>
}

// nn.silu {impl = "eigen"} is x * sigmoid(x) (TensorFlow's Sigmoid, then Mul);
// 4 * 8 elements a sample: no tail, no exp.
// CHECK-LABEL: func.func @k_whole
// CHECK:           %[[X:.+]] = loop.load %x[%i, %j, %k] : memref<?x4x8xf32>
// CHECK-NOT:       math.exp
// CHECK:           %[[Y:.+]] = arith.mulf %[[X]], %{{.+}} : f32
// CHECK-NEXT:      loop.store %[[Y]], %out[%i, %j, %k] : f32, memref<?x4x8xf32>
// CHECK-NEXT:    }

func.func @static(%x: tensor<3x5xf32>) -> tensor<3x5xf32> {
  %r = nn.stack "k_static" (%x) : (tensor<3x5xf32>) -> tensor<3x5xf32> {
  ^bb0(%a: tensor<3x5xf32>):
    %y = nn.sigmoid %a {impl = "eigen"} : tensor<3x5xf32> -> tensor<3x5xf32>
    nn.yield %y : tensor<3x5xf32>
  }
  func.return %r : tensor<3x5xf32>
}

// A static shape: 15 elements, the tail starts at 8.
// CHECK-LABEL: func.func @k_static
// CHECK:           %[[START:.+]] = arith.constant 8 : index
// CHECK-NEXT:      %[[C5:.+]] = arith.constant 5 : index
// CHECK-NEXT:      %[[I5:.+]] = arith.muli %i, %[[C5]] : index
// CHECK-NEXT:      %[[FLAT:.+]] = arith.addi %[[I5]], %j : index
// CHECK-NEXT:      %{{.+}} = arith.cmpi sge, %[[FLAT]], %[[START]] : index
// CHECK:           math.exp
// CHECK:           loop.store

// All of it lowers to LLVM IR (exp only where there is a tail).
// IR: define {{.*}}@k_tail_p0(
// IR: @llvm.exp.v16f32(
// IR: define {{.*}}@k_whole_p0(
// IR-NOT: @llvm.exp
// IR: define {{.*}}@k_static_p0(
// IR: @llvm.exp
