// RUN: bs-opt %s | filecheck %s
// RUN: bs-opt %s | bs-opt | filecheck %s
// RUN: bs-opt %s --print-op-generic | bs-opt | filecheck %s
// RUN: bs-opt %s --print-op-generic | filecheck %s --check-prefix=GENERIC

// Every loop op in its custom form: parse, print, print again from the printed
// form, and from the generic form. The GENERIC checks pin the properties that
// the custom syntax hides (dynamic bounds, segment sizes, identity maps).

func.func @graph(%x: tensor<?x37x13x13xf32>, %p: tensor<37xf32>) -> tensor<?x37x7x7xf32> {
  %y = loop.launch @kern(%x, %p) : (tensor<?x37x13x13xf32>, tensor<37xf32>) -> tensor<?x37x7x7xf32>
  %z:2 = loop.launch @two(%x) {note = "x"} : (tensor<?x37x13x13xf32>) -> (tensor<?x37x13x13xf32>, tensor<?x37x13x13xf32>)
  func.return %y : tensor<?x37x7x7xf32>
}

// CHECK-LABEL: func.func @graph
// CHECK-NEXT:    %y = loop.launch @kern(%x, %p) : (tensor<?x37x13x13xf32>, tensor<37xf32>) -> tensor<?x37x7x7xf32>
// CHECK-NEXT:    %z, %z_1 = loop.launch @two(%x) {note = "x"} : (tensor<?x37x13x13xf32>) -> (tensor<?x37x13x13xf32>, tensor<?x37x13x13xf32>)
// CHECK-NEXT:    func.return %y : tensor<?x37x7x7xf32>

// GENERIC-LABEL: "func.func"() <{sym_name = "graph"
// GENERIC:         "loop.launch"(%x, %p) <{callee = @kern}> : (tensor<?x37x13x13xf32>, tensor<37xf32>) -> tensor<?x37x7x7xf32>
// GENERIC:         "loop.launch"(%x) <{callee = @two}> {note = "x"} : (tensor<?x37x13x13xf32>) -> (tensor<?x37x13x13xf32>, tensor<?x37x13x13xf32>)

// A windowed nest: dynamic batch bound, `parallel`, a padded load through a
// map, in_bounds, a max reduction yielding a value, and a broadcast load.
func.func @kern(%x: memref<?x37x13x13xf32>, %p: memref<37xf32>, %out: memref<?x37x7x7xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  loop.nest parallel 2 (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
    %m = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xFF800000 : f32 -> f32 {
      %v = loop.load %x[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4 - 1, d3 * 2 + d5 - 1)> pad 0xFF800000 : f32 : memref<?x37x13x13xf32>
      %ok = loop.in_bounds [%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4 - 1, d3 * 2 + d5 - 1)> within (%batch, 37, 13, 13)
      %ninf = arith.constant 0xFF800000 : f32
      %s = arith.select %ok, %v, %ninf : f32
      loop.yield %s : f32
    }
    %a = loop.load %p[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d1)> : memref<37xf32>
    %id = loop.load %out[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<?x37x7x7xf32>
    %zp = loop.load %p[%c] pad -1.5 : f32 : memref<37xf32>
    %r = arith.mulf %m, %a : f32
    loop.store %r, %out[%n, %c, %h, %w] : f32, memref<?x37x7x7xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @kern
// CHECK-SAME:    attributes {bs.kernel}
// CHECK-NEXT:    %c0 = arith.constant 0 : index
// CHECK-NEXT:    %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
// CHECK-NEXT:    loop.nest parallel 2 (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
// CHECK-NEXT:      %m = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xff800000 : f32 -> f32 {
// CHECK-NEXT:        %v = loop.load %x[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, (((d2 * 2) + d4) + -1), (((d3 * 2) + d5) + -1))> pad 0xff800000 : f32 : memref<?x37x13x13xf32>
// CHECK-NEXT:        %ok = loop.in_bounds [%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, (((d2 * 2) + d4) + -1), (((d3 * 2) + d5) + -1))> within (%batch, 37, 13, 13)
// CHECK-NEXT:        %ninf = arith.constant 0xff800000 : f32
// CHECK-NEXT:        %s = arith.select %ok, %v, %ninf : f32
// CHECK-NEXT:        loop.yield %s : f32
// CHECK-NEXT:      }
// CHECK-NEXT:      %a = loop.load %p[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d1)> : memref<37xf32>
// an identity map is not printed
// CHECK-NEXT:      %id = loop.load %out[%n, %c, %h, %w] : memref<?x37x7x7xf32>
// CHECK-NEXT:      %zp = loop.load %p[%c] pad -1.500000e+00 : f32 : memref<37xf32>
// CHECK-NEXT:      %r = arith.mulf %m, %a : f32
// CHECK-NEXT:      loop.store %r, %out[%n, %c, %h, %w] : f32, memref<?x37x7x7xf32>
// the implicit loop.yield of a nest is not printed
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return

// GENERIC-LABEL: "func.func"() <{sym_name = "kern"
// GENERIC:         "loop.nest"(%batch) <{lower = array<i64: 0, 0, 0, 0>, upper = array<i64: -9223372036854775808, 37, 7, 7>, parallel = 2 : i64, operandSegmentSizes = array<i32: 0, 1>}> ({
// GENERIC-NEXT:    ^bb0(%n: index, %c: index, %h: index, %w: index):
// GENERIC-NEXT:      "loop.reduce"() <{lower = array<i64: 0, 0>, upper = array<i64: 3, 3>, kind = "max", init = 0xff800000 : f32, operandSegmentSizes = array<i32: 0, 0>}> ({
// GENERIC-NEXT:      ^bb0(%kh: index, %kw: index):
// GENERIC-NEXT:        "loop.load"(%x, %n, %c, %h, %w, %kh, %kw) <{map = affine_map<{{.*}}>, pad = 0xff800000 : f32}> : (memref<?x37x13x13xf32>, index, index, index, index, index, index) -> f32
// GENERIC-NEXT:        "loop.in_bounds"(%batch, %n, %c, %h, %w, %kh, %kw) <{extents = array<i64: -9223372036854775808, 37, 13, 13>, map = affine_map<{{.*}}>, operandSegmentSizes = array<i32: 1, 6>}> : (index, index, index, index, index, index, index) -> i1
// GENERIC:             "loop.yield"(%s) : (f32) -> ()
// GENERIC:           "loop.load"(%out, %n, %c, %h, %w) <{map = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>}>
// GENERIC:           "loop.store"(%r, %out, %n, %c, %h, %w) <{map = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>}> : (f32, memref<?x37x7x7xf32>, index, index, index, index) -> ()
// GENERIC-NEXT:      "loop.yield"() : () -> ()
// GENERIC-NEXT:    }) : (index) -> ()

// A depth-first tile: SSA tile bounds in the inner nests, a scratch alloca,
// stores and loads through maps, an add reduction with SSA lower and upper
// bounds, an attribute dictionary on tile and nest, and a nest with no dims.
func.func @tiles(%x: memref<?x37x13x13xf32>, %out: memref<?x13x13x37xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  loop.tile parallel 1 (%tn, %tc) = (0, 0) to (%batch, 37) step (1, 5) items few attributes {note = "t"} {
    %s = memref.alloca() : memref<1x5x13x13xf32>
    %c5 = arith.constant 5 : index
    %e = arith.addi %tc, %c5 : index
    %c37 = arith.constant 37 : index
    %ub = arith.minsi %e, %c37 : index
    %c1 = arith.constant 1 : index
    %nb = arith.addi %tn, %c1 : index
    loop.nest (%n, %c, %h, %w) = (%tn, %tc, 0, 0) to (%nb, %ub, 13, 13) {
      %v = loop.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
      loop.store %v, %s[%n, %c, %h, %w, %tn, %tc] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0 - d4, d1 - d5, d2, d3)> : f32, memref<1x5x13x13xf32>
    }
    loop.nest (%n, %c, %h, %w) = (%tn, %tc, 0, 0) to (%nb, %ub, 13, 13) attributes {bs.scalar = "why"} {
      %lo = arith.constant 2 : index
      %sum = loop.reduce add (%k) = (%lo) to (%h) init 0.0 : f32 -> f32 {
        %v = loop.load %s[%n, %c, %k, %w, %tn, %tc] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0 - d4, d1 - d5, d2, d3)> : memref<1x5x13x13xf32>
        loop.yield %v : f32
      }
      loop.store %sum, %out[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d2, d3, d1)> : f32, memref<?x13x13x37xf32>
    }
  }
  loop.nest () = () to () {
  }
  func.return
}

// CHECK-LABEL: func.func @tiles
// CHECK:         loop.tile parallel 1 (%tn, %tc) = (0, 0) to (%batch, 37) step (1, 5) items few attributes {note = "t"} {
// CHECK-NEXT:      %s = memref.alloca() : memref<1x5x13x13xf32>
// CHECK:           %nb = arith.addi %tn, %c1 : index
// CHECK-NEXT:      loop.nest (%n, %c, %h, %w) = (%tn, %tc, 0, 0) to (%nb, %ub, 13, 13) {
// CHECK-NEXT:        %v = loop.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
// CHECK-NEXT:        loop.store %v, %s[%n, %c, %h, %w, %tn, %tc] map affine_map<(d0, d1, d2, d3, d4, d5) -> ((d0 + (d4 * -1)), (d1 + (d5 * -1)), d2, d3)> : f32, memref<1x5x13x13xf32>
// CHECK-NEXT:      }
// CHECK-NEXT:      loop.nest (%[[N:.+]], %[[C:.+]], %[[H:.+]], %[[W:.+]]) = (%tn, %tc, 0, 0) to (%nb, %ub, 13, 13) attributes {bs.scalar = "why"} {
// CHECK-NEXT:        %lo = arith.constant 2 : index
// CHECK-NEXT:        %sum = loop.reduce add (%k) = (%lo) to (%[[H]]) init 0.000000e+00 : f32 -> f32 {
// CHECK-NEXT:          %{{.+}} = loop.load %s[%[[N]], %[[C]], %k, %[[W]], %tn, %tc] map affine_map<(d0, d1, d2, d3, d4, d5) -> ((d0 + (d4 * -1)), (d1 + (d5 * -1)), d2, d3)> : memref<1x5x13x13xf32>
// CHECK-NEXT:          loop.yield %{{.+}} : f32
// CHECK-NEXT:        }
// CHECK-NEXT:        loop.store %sum, %out[%[[N]], %[[C]], %[[H]], %[[W]]] map affine_map<(d0, d1, d2, d3) -> (d0, d2, d3, d1)> : f32, memref<?x13x13x37xf32>
// CHECK-NEXT:      }
// CHECK-NEXT:    }
// CHECK-NEXT:    loop.nest () = () to () {
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return

// GENERIC-LABEL: "func.func"() <{sym_name = "tiles"
// GENERIC:         "loop.tile"(%batch) <{lower = array<i64: 0, 0>, upper = array<i64: -9223372036854775808, 37>, step = array<i64: 1, 5>, parallel = 1 : i64, items = "few", operandSegmentSizes = array<i32: 0, 1>}> ({
// GENERIC:           "loop.nest"(%tn, %tc, %nb, %ub) <{lower = array<i64: -9223372036854775808, -9223372036854775808, 0, 0>, upper = array<i64: -9223372036854775808, -9223372036854775808, 13, 13>, operandSegmentSizes = array<i32: 2, 2>}> ({
// GENERIC:             "loop.reduce"(%lo, %{{.+}}) <{lower = array<i64: -9223372036854775808>, upper = array<i64: -9223372036854775808>, kind = "add", init = 0.000000e+00 : f32, operandSegmentSizes = array<i32: 1, 1>}> ({
// GENERIC:           }) {bs.scalar = "why"} : (index, index, index, index) -> ()
// GENERIC-NEXT:      "loop.yield"() : () -> ()
// GENERIC-NEXT:    }) {note = "t"} : (index) -> ()
// GENERIC-NEXT:    "loop.nest"() <{lower = array<i64>, upper = array<i64>, operandSegmentSizes = array<i32: 0, 0>}> ({
// GENERIC-NEXT:      "loop.yield"() : () -> ()
// GENERIC-NEXT:    }) : () -> ()

// A contracting reduction that unrolls its dims from %kw on (`unroll 1`).
func.func @row_taps(%x: memref<?x9x9x37xf32>, %wt: memref<3x3x37xf32>, %out: memref<?x7x7x37xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x9x9x37xf32>
  loop.nest (%n, %h, %w, %c) = (0, 0, 0, 0) to (%batch, 7, 7, 37) {
    %s = loop.reduce add contract unroll 1 (%kh, %kw) = (0, 0) to (3, 3) init 0.0 : f32 -> f32 {
      %v = loop.load %x[%n, %h, %w, %c, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1 + d4, d2 + d5, d3)> : memref<?x9x9x37xf32>
      %k = loop.load %wt[%kh, %kw, %c] : memref<3x3x37xf32>
      %p = arith.mulf %v, %k : f32
      loop.yield %p : f32
    }
    loop.store %s, %out[%n, %h, %w, %c] : f32, memref<?x7x7x37xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @row_taps
// CHECK:         %s = loop.reduce add contract unroll 1 (%kh, %kw) = (0, 0) to (3, 3) init 0.000000e+00 : f32 -> f32 {
// GENERIC-LABEL: "func.func"() <{sym_name = "row_taps"
// GENERIC:         "loop.reduce"() <{lower = array<i64: 0, 0>, upper = array<i64: 3, 3>, kind = "add", init = 0.000000e+00 : f32, contract, unroll = 1 : index, operandSegmentSizes = array<i32: 0, 0>}> ({

// kernel_info lives at module level, next to the lowered kernel
loop.kernel_info {num_args = 2 : i64, parallel = array<i64: 1, 4>, scratch_dims = array<i64>, kernel = "kern", phases = ["kern_p0", "kern_p1"], buffers = [memref<?x37x13x13xf32>, memref<37xf32>], work = array<i64: 37, 1813>, target = "x86-64"}

// CHECK:       loop.kernel_info {num_args = 2 : i64, parallel = array<i64: 1, 4>, scratch_dims = array<i64>, kernel = "kern", phases = ["kern_p0", "kern_p1"], buffers = [memref<?x37x13x13xf32>, memref<37xf32>], work = array<i64: 37, 1813>, target = "x86-64"}
// GENERIC:     "loop.kernel_info"() <{num_args = 2 : i64, parallel = array<i64: 1, 4>, scratch_dims = array<i64>, kernel = "kern", phases = ["kern_p0", "kern_p1"], buffers = [memref<?x37x13x13xf32>, memref<37xf32>], work = array<i64: 37, 1813>, target = "x86-64"}> : () -> ()

// a kernel lowered for nvptx, with its launch shape; its scratch buffers'
// dynamic dims are argument 0's dim 0 and the batch
loop.kernel_info {num_args = 1 : i64, parallel = array<i64: 1, 0>, scratch_dims = array<i64: 0, 0, -1, -1>, gpu_launch = #loop.gpu_launch<lanes = [37, 13], tiles = [0, 0], groups = [1, 1], arch = "sm_90">, kernel = "gpu", phases = ["gpu_p0", "gpu_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>, memref<?xf32>], work = array<i64: 37, 37>, target = "nvptx"}

// CHECK:       loop.kernel_info {num_args = 1 : i64, parallel = array<i64: 1, 0>, scratch_dims = array<i64: 0, 0, -1, -1>, gpu_launch = #loop.gpu_launch<lanes = [37, 13], tiles = [0, 0], groups = [1, 1], arch = "sm_90">, kernel = "gpu", phases = ["gpu_p0", "gpu_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>, memref<?xf32>], work = array<i64: 37, 37>, target = "nvptx"}
// GENERIC:     "loop.kernel_info"() <{num_args = 1 : i64, parallel = array<i64: 1, 0>, scratch_dims = array<i64: 0, 0, -1, -1>, gpu_launch = #loop.gpu_launch<lanes = [37, 13], tiles = [0, 0], groups = [1, 1], arch = "sm_90">, kernel = "gpu", phases = ["gpu_p0", "gpu_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>, memref<?xf32>], work = array<i64: 37, 37>, target = "nvptx"}> : () -> ()
