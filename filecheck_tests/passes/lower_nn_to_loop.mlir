// RUN: bs-opt %s -p bs-lower-nn-to-loop | filecheck %s
// RUN: bs-opt %s -p bs-lower-nn-to-loop | filecheck %s --check-prefix=GONE

// bs-lower-nn-to-loop replaces each nn.stack by a loop.launch of a new
// func.func marked bs.kernel, whose memref arguments are the stack's inputs,
// then its outputs; the launch records the stack's name in `bs.stack` (the
// callee may change when bs-dedup-kernels shares kernels). Each layer becomes
// loop nests; intermediates are memref.allocs, outputs are written in place.

// Every stack that can be lowered is gone.
// GONE-NOT: nn.stack "k_{{bn_relu|bn_nhwc|pool_nhwc|cat|outputs}}"

// BN -> ReLU (NCHW): the per-channel alpha/beta nest, then x * alpha + beta
// into a scratch buffer, then ReLU into the output argument.
func.func @bn_nchw(%x: tensor<?x37x13x13xf32>, %g: tensor<37xf32>, %b: tensor<37xf32>, %m: tensor<37xf32>, %v: tensor<37xf32>) -> tensor<?x37x13x13xf32> {
  %r = nn.stack "k_bn_relu" (%x, %g, %b, %m, %v) : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32> {
  ^bb0(%a: tensor<?x37x13x13xf32>, %ga: tensor<37xf32>, %ba: tensor<37xf32>, %ma: tensor<37xf32>, %va: tensor<37xf32>):
    %y = nn.batch_norm %a weight %ga bias %ba mean %ma var %va {eps = 1.000000e-03 : f64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
    %z = nn.relu %y : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
    nn.yield %z : tensor<?x37x13x13xf32>
  }
  func.return %r : tensor<?x37x13x13xf32>
}

// CHECK-LABEL: func.func @bn_nchw
// CHECK-NEXT:    %r = loop.launch @k_bn_relu(%x, %g, %b, %m, %v) {bs.stack = "k_bn_relu"} : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    func.return %r
// CHECK-NEXT:  }
// CHECK-NEXT:  func.func @k_bn_relu(%x: memref<?x37x13x13xf32>, %g: memref<37xf32>, %b: memref<37xf32>, %m: memref<37xf32>, %v: memref<37xf32>, %out: memref<?x37x13x13xf32>) attributes {bs.kernel} {
// CHECK-NEXT:    %[[C0:.+]] = arith.constant 0 : index
// CHECK-NEXT:    %batch = memref.dim %x, %[[C0]] : memref<?x37x13x13xf32>
// CHECK-NEXT:    %y = memref.alloc(%batch) : memref<?x37x13x13xf32>
// CHECK-NEXT:    %alpha = memref.alloc() : memref<37xf32>
// CHECK-NEXT:    %beta = memref.alloc() : memref<37xf32>
//   alpha = weight * (1 / sqrt(var + eps)), beta = bias - mean * alpha, rounded
//   once (a fused multiply-add, as PyTorch's kernel computes it)
// CHECK-NEXT:    loop.nest (%i) = (0) to (37) {
// CHECK-NEXT:      %[[ONE:.+]] = arith.constant 1.000000e+00 : f32
// CHECK-NEXT:      %[[VAR:.+]] = loop.load %v[%i] : memref<37xf32>
// CHECK-NEXT:      %[[EPS:.+]] = arith.constant 1.000000e-03 : f32
// CHECK-NEXT:      %[[VE:.+]] = arith.addf %[[VAR]], %[[EPS]] : f32
// CHECK-NEXT:      %[[SQ:.+]] = math.sqrt %[[VE]] : f32
// CHECK-NEXT:      %[[INV:.+]] = arith.divf %[[ONE]], %[[SQ]] : f32
// CHECK-NEXT:      %[[G:.+]] = loop.load %g[%i] : memref<37xf32>
// CHECK-NEXT:      %[[A:.+]] = arith.mulf %[[INV]], %[[G]] : f32
// CHECK-NEXT:      %[[B:.+]] = loop.load %b[%i] : memref<37xf32>
// CHECK-NEXT:      loop.store %[[A]], %alpha[%i] : f32, memref<37xf32>
// CHECK-NEXT:      %[[M:.+]] = loop.load %m[%i] : memref<37xf32>
// CHECK-NEXT:      %[[NM:.+]] = arith.negf %[[M]] : f32
// CHECK-NEXT:      %[[BE:.+]] = math.fma %[[NM]], %[[A]], %[[B]] : f32
// CHECK-NEXT:      loop.store %[[BE]], %beta[%i] : f32, memref<37xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 13, 13) {
// CHECK-NEXT:      %[[X:.+]] = loop.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
// CHECK-NEXT:      %[[AL:.+]] = loop.load %alpha[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d1)> : memref<37xf32>
// CHECK-NEXT:      %[[BL:.+]] = loop.load %beta[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d1)> : memref<37xf32>
// CHECK-NEXT:      %[[Y:.+]] = math.fma %[[X]], %[[AL]], %[[BL]] : f32
// CHECK-NEXT:      loop.store %[[Y]], %y[%n, %c, %h, %w] : f32, memref<?x37x13x13xf32>
// CHECK-NEXT:    }
//   relu(x) = x < 0 ? 0 : x (NaN stays NaN)
// CHECK-NEXT:    loop.nest (%[[N:.+]], %[[C:.+]], %[[H:.+]], %[[W:.+]]) = (0, 0, 0, 0) to (%batch, 37, 13, 13) {
// CHECK-NEXT:      %[[V:.+]] = loop.load %y[%[[N]], %[[C]], %[[H]], %[[W]]] : memref<?x37x13x13xf32>
// CHECK-NEXT:      %[[Z:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:      %[[LT:.+]] = arith.cmpf olt, %[[V]], %[[Z]] : f32
// CHECK-NEXT:      %[[R:.+]] = arith.select %[[LT]], %[[Z]], %[[V]] : f32
// CHECK-NEXT:      loop.store %[[R]], %out[%[[N]], %[[C]], %[[H]], %[[W]]] : f32, memref<?x37x13x13xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return
// CHECK-NEXT:  }

// NHWC: the nest still runs over logical (N, C, H, W) with C = 37; x and the
// output are reached through the permuted map (n, h, w, c). Without weight
// and bias the formula uses 1 and 0. With impl = "eigen" (TensorFlow's
// operations) every product and sum is rounded.
func.func @bn_nhwc(%x: tensor<?x13x11x37xf32>, %m: tensor<37xf32>, %v: tensor<37xf32>) -> tensor<?x13x11x37xf32> {
  %r = nn.stack "k_bn_nhwc" (%x, %m, %v) : (tensor<?x13x11x37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x13x11x37xf32> {
  ^bb0(%a: tensor<?x13x11x37xf32>, %ma: tensor<37xf32>, %va: tensor<37xf32>):
    %y = nn.batch_norm %a mean %ma var %va {eps = 1.000000e-05 : f64, layout = "NHWC", impl = "eigen"} : (tensor<?x13x11x37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x13x11x37xf32>
    nn.yield %y : tensor<?x13x11x37xf32>
  }
  func.return %r : tensor<?x13x11x37xf32>
}

// CHECK-LABEL: func.func @bn_nhwc
// CHECK-NEXT:    %r = loop.launch @k_bn_nhwc(%x, %m, %v)
// CHECK:       func.func @k_bn_nhwc(%x: memref<?x13x11x37xf32>, %m: memref<37xf32>, %v: memref<37xf32>, %out: memref<?x13x11x37xf32>) attributes {bs.kernel} {
// CHECK-NOT:     memref.alloc(%batch)
// CHECK:         %alpha = memref.alloc() : memref<37xf32>
// CHECK-NEXT:    %beta = memref.alloc() : memref<37xf32>
// CHECK-NEXT:    loop.nest (%i) = (0) to (37) {
// CHECK-NOT:       loop.load %g
// CHECK:           %[[M:.+]] = loop.load %m[%i] : memref<37xf32>
// CHECK-NEXT:      %[[MA:.+]] = arith.mulf %[[M]], %{{.+}} : f32
// CHECK-NEXT:      %[[BE:.+]] = arith.subf %{{.+}}, %[[MA]] : f32
// CHECK-NEXT:      loop.store %[[BE]], %beta[%i] : f32, memref<37xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 13, 11) {
// CHECK-NEXT:      loop.load %x[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d2, d3, d1)> : memref<?x13x11x37xf32>
// CHECK-NEXT:      loop.load %alpha[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d1)> : memref<37xf32>
// CHECK-NEXT:      loop.load %beta[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d1)> : memref<37xf32>
// CHECK-NEXT:      arith.mulf
// CHECK-NEXT:      arith.addf
// CHECK-NEXT:      loop.store %{{.+}}, %out[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d2, d3, d1)> : f32, memref<?x13x11x37xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return

// NHWC max pooling (3x3, stride 2, padding 1): a max reduction over the window
// with a -inf pad, through the permuted window map.
func.func @pool_nhwc(%x: tensor<?x13x11x37xf32>) -> tensor<?x7x6x37xf32> {
  %r = nn.stack "k_pool_nhwc" (%x) : (tensor<?x13x11x37xf32>) -> tensor<?x7x6x37xf32> {
  ^bb0(%a: tensor<?x13x11x37xf32>):
    %p = nn.max_pool2d %a {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NHWC"} : tensor<?x13x11x37xf32> -> tensor<?x7x6x37xf32>
    nn.yield %p : tensor<?x7x6x37xf32>
  }
  func.return %r : tensor<?x7x6x37xf32>
}

// CHECK-LABEL: func.func @k_pool_nhwc
// CHECK:         loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 6) {
// CHECK-NEXT:      %[[MX:.+]] = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xff800000 : f32 -> f32 {
// CHECK-NEXT:        %[[E:.+]] = loop.load %x[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, (((d2 * 2) + d4) + -1), (((d3 * 2) + d5) + -1), d1)> pad 0xff800000 : f32 : memref<?x13x11x37xf32>
// CHECK-NEXT:        loop.yield %[[E]] : f32
// CHECK-NEXT:      }
// CHECK-NEXT:      loop.store %[[MX]], %out[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d2, d3, d1)> : f32, memref<?x7x6x37xf32>
// CHECK-NEXT:    }

// cat along C: one copy nest per operand, each over that operand's extents,
// the second shifted by the first's 16 channels.
func.func @cat(%x: tensor<?x16x13x13xf32>, %y: tensor<?x21x13x13xf32>) -> tensor<?x37x13x13xf32> {
  %r = nn.stack "k_cat" (%x, %y) : (tensor<?x16x13x13xf32>, tensor<?x21x13x13xf32>) -> tensor<?x37x13x13xf32> {
  ^bb0(%a: tensor<?x16x13x13xf32>, %b: tensor<?x21x13x13xf32>):
    %c = nn.cat %a, %b {axis = 1 : i64} : (tensor<?x16x13x13xf32>, tensor<?x21x13x13xf32>) -> tensor<?x37x13x13xf32>
    nn.yield %c : tensor<?x37x13x13xf32>
  }
  func.return %r : tensor<?x37x13x13xf32>
}

// CHECK-LABEL: func.func @k_cat(%x: memref<?x16x13x13xf32>, %y: memref<?x21x13x13xf32>, %out: memref<?x37x13x13xf32>)
// CHECK:         loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 16, 13, 13) {
// CHECK-NEXT:      %[[V0:.+]] = loop.load %x[%n, %c, %h, %w] : memref<?x16x13x13xf32>
// CHECK-NEXT:      loop.store %[[V0]], %out[%n, %c, %h, %w] : f32, memref<?x37x13x13xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    loop.nest (%[[N:.+]], %[[C:.+]], %[[H:.+]], %[[W:.+]]) = (0, 0, 0, 0) to (%batch, 21, 13, 13) {
// CHECK-NEXT:      %[[V1:.+]] = loop.load %y[%[[N]], %[[C]], %[[H]], %[[W]]] : memref<?x21x13x13xf32>
// CHECK-NEXT:      loop.store %[[V1]], %out[%[[N]], %[[C]], %[[H]], %[[W]]] map affine_map<(d0, d1, d2, d3) -> (d0, (d1 + 16), d2, d3)> : f32, memref<?x37x13x13xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return

// A value yielded twice is written once and copied; a yielded stack input is
// copied. Static shapes need no memref.dim, and a broadcast operand is read
// through a map that drops the broadcast dim.
func.func @outputs(%x: tensor<3x29xf32>, %y: tensor<29xf32>) -> (tensor<3x29xf32>, tensor<3x29xf32>, tensor<3x29xf32>) {
  %r:3 = nn.stack "k_outputs" (%x, %y) : (tensor<3x29xf32>, tensor<29xf32>) -> (tensor<3x29xf32>, tensor<3x29xf32>, tensor<3x29xf32>) {
  ^bb0(%a: tensor<3x29xf32>, %b: tensor<29xf32>):
    %t = nn.add %a, %b : (tensor<3x29xf32>, tensor<29xf32>) -> tensor<3x29xf32>
    nn.yield %t, %t, %a : tensor<3x29xf32>, tensor<3x29xf32>, tensor<3x29xf32>
  }
  func.return %r#0, %r#1, %r#2 : tensor<3x29xf32>, tensor<3x29xf32>, tensor<3x29xf32>
}

// CHECK-LABEL: func.func @outputs
// CHECK-NEXT:    %r, %r_1, %r_2 = loop.launch @k_outputs(%x, %y) {{.*}}: (tensor<3x29xf32>, tensor<29xf32>) -> (tensor<3x29xf32>, tensor<3x29xf32>, tensor<3x29xf32>)
// CHECK:       func.func @k_outputs(%x: memref<3x29xf32>, %y: memref<29xf32>, %out0: memref<3x29xf32>, %out1: memref<3x29xf32>, %out2: memref<3x29xf32>) attributes {bs.kernel} {
// CHECK-NEXT:    loop.nest (%i, %j) = (0, 0) to (3, 29) {
// CHECK-NEXT:      %[[A:.+]] = loop.load %x[%i, %j] : memref<3x29xf32>
// CHECK-NEXT:      %[[B:.+]] = loop.load %y[%i, %j] map affine_map<(d0, d1) -> (d1)> : memref<29xf32>
// CHECK-NEXT:      %[[S:.+]] = arith.addf %[[A]], %[[B]] : f32
// CHECK-NEXT:      loop.store %[[S]], %out0[%i, %j] : f32, memref<3x29xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    loop.nest
// CHECK-NEXT:      loop.load %out0
// CHECK-NEXT:      loop.store %{{.+}}, %out1
// CHECK-NEXT:    }
// CHECK-NEXT:    loop.nest
// CHECK-NEXT:      loop.load %x
// CHECK-NEXT:      loop.store %{{.+}}, %out2
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return

// Left alone: a layer without a loop lowering (a mean over the dynamic batch)
// keeps its stack, with the reason, for the framework to run.
func.func @fallback(%x: tensor<?x29xf32>) -> tensor<29xf32> {
  %r = nn.stack "k_mean" (%x) : (tensor<?x29xf32>) -> tensor<29xf32> {
  ^bb0(%a: tensor<?x29xf32>):
    %b = nn.mean %a {dims = array<i64: 0>, keepdim = false} : tensor<?x29xf32> -> tensor<29xf32>
    nn.yield %b : tensor<29xf32>
  }
  func.return %r : tensor<29xf32>
}

// CHECK-LABEL: func.func @fallback
// CHECK-NEXT:    %r = nn.stack "k_mean" (%x) attributes {bs.fallback = "mean over the dynamic batch dimension"}
// CHECK-NEXT:    ^bb0(
// CHECK-NEXT:      nn.mean
// CHECK-NEXT:      nn.yield
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return %r
// CHECK-NOT:   func.func @k_mean

// Regression: a dynamic extent other than the batch is lowered as if it were
// the batch extent: the nest runs to (%batch, %batch), out of bounds whenever
// the two differ. The stack should stay an nn.stack with a bs.fallback reason
// (nn_to_loop.KernelBuilder.extent raises for this only when there is no batch
// at all). bs-form-stacks never builds such a stack, but the pass accepts it.
func.func @dyn_channels(%x: tensor<?x?xf32>) -> tensor<?x?xf32> {
  %r = nn.stack "k_dyn" (%x) : (tensor<?x?xf32>) -> tensor<?x?xf32> {
  ^bb0(%a: tensor<?x?xf32>):
    %b = nn.relu %a : tensor<?x?xf32> -> tensor<?x?xf32>
    nn.yield %b : tensor<?x?xf32>
  }
  func.return %r : tensor<?x?xf32>
}

// CHECK-LABEL: func.func @dyn_channels
// CHECK-NEXT:    %r = nn.stack "k_dyn" (%x) attributes {bs.fallback = "{{.+}}"}
// CHECK-NOT:     loop.nest (%i, %j) = (0, 0) to (%batch, %batch)
