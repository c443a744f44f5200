// RUN: bs-opt %s --split-input-file --verify-diagnostics | filecheck %s

// One invalid loop op per split. Each CHECK pair matches the split separator
// that bs-opt prints and, on the next line, the verifier's message.

// an empty range in a static bound pair
func.func @f() {
  loop.nest (%i, %j) = (0, 5) to (37, 3) {
  }
  func.return
}

// CHECK: loop.nest: empty or negative range 5 to 3

// -----

// `parallel` counts outer dims; it may not exceed the nest's rank
func.func @f() {
  loop.nest parallel 2 (%i) = (0) to (37) {
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.nest: parallel 2 out of range for 1 dims

// -----

// generic form: one induction variable per bound
func.func @f() {
  "loop.nest"() <{lower = array<i64: 0>, upper = array<i64: 37>, operandSegmentSizes = array<i32: 0, 0>}> ({
  ^bb0(%i: index, %j: index):
    "loop.yield"() : () -> ()
  }) : () -> ()
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.nest: 2 ivs but 1/1 bounds

// -----

// induction variables are index
func.func @f() {
  "loop.nest"() <{lower = array<i64: 0>, upper = array<i64: 37>, operandSegmentSizes = array<i32: 0, 0>}> ({
  ^bb0(%i: i64):
    "loop.yield"() : () -> ()
  }) : () -> ()
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.nest: induction variables must be index

// -----

// tile steps are positive
func.func @f() {
  loop.tile (%t, %u) = (0, 0) to (37, 13) step (8, 0) {
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.tile: needs one positive step per dimension

// -----

// one step per tile dimension
func.func @f() {
  loop.tile (%t, %u) = (0, 0) to (37, 13) step (8) {
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.tile: needs one positive step per dimension

// -----

// `items` is few or many
func.func @f() {
  loop.tile (%t) = (0) to (37) step (1) items some {
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.tile: unknown items 'some', expected one of ('few', 'many')

// -----

// `items` counts the points of the first dim
func.func @f() {
  loop.tile () = () to () step () items few {
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.tile: items needs a first dim to count

// -----

// a reduce kind the backends don't know
func.func @f() {
  loop.nest (%i) = (0) to (37) {
    %m = loop.reduce min (%k) = (0) to (3) init 0.0 : f32 -> f32 {
      %z = arith.constant 0.0 : f32
      loop.yield %z : f32
    }
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.reduce: unknown kind 'min', expected one of ('add', 'max')

// -----

// the reduce body yields the result type
func.func @f() {
  loop.nest (%i) = (0) to (37) {
    %m = loop.reduce add (%k) = (0) to (3) init 0.0 : f32 -> f32 {
      %z = arith.constant 0.0 : f64
      loop.yield %z : f64
    }
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.reduce: body yields f64 but the result is f32

// -----

// the reduce body yields exactly one value
func.func @f() {
  loop.nest (%i) = (0) to (37) {
    %m = loop.reduce add (%k) = (0) to (3) init 0.0 : f32 -> f32 {
      loop.yield
    }
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.reduce: body must end in loop.yield of one value

// -----

// an empty reduction range
func.func @f() {
  loop.nest (%i) = (0) to (37) {
    %m = loop.reduce max (%k) = (7) to (3) init 0.0 : f32 -> f32 {
      %z = arith.constant 0.0 : f32
      loop.yield %z : f32
    }
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.reduce: empty or negative range 7 to 3

// -----

// the map's dims are the given indices
func.func @f(%b: memref<37x13xf32>) {
  loop.nest (%i) = (0) to (37) {
    %v = loop.load %b[%i] map affine_map<(d0, d1) -> (d0, d1)> : memref<37x13xf32>
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.load: map has 2 dims but 1 indices are given

// -----

// the map's results index every buffer dim
func.func @f(%b: memref<37x13xf32>) {
  loop.nest (%i) = (0) to (37) {
    %v = loop.load %b[%i] map affine_map<(d0) -> (d0)> : memref<37x13xf32>
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.load: map has 1 results but the buffer has rank 2

// -----

// maps have no symbols (dynamic values are indices)
func.func @f(%b: memref<37xf32>) {
  loop.nest (%i) = (0) to (37) {
    %v = loop.load %b[%i] map affine_map<(d0)[s0] -> (d0 + s0)> : memref<37xf32>
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.load: maps may not have symbols

// -----

// store: map results vs buffer rank
func.func @f(%b: memref<37x13xf32>) {
  loop.nest (%i, %j) = (0, 0) to (37, 13) {
    %z = arith.constant 0.0 : f32
    loop.store %z, %b[%i, %j] map affine_map<(d0, d1) -> (d1)> : f32, memref<37x13xf32>
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.store: map has 1 results but the buffer has rank 2

// -----

// store: map dims vs indices
func.func @f(%b: memref<37x13xf32>) {
  loop.nest (%i, %j) = (0, 0) to (37, 13) {
    %z = arith.constant 0.0 : f32
    loop.store %z, %b[%i, %j] map affine_map<(d0, d1, d2) -> (d0, d1)> : f32, memref<37x13xf32>
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.store: map has 3 dims but 2 indices are given

// -----

// in_bounds: map results vs the number of extents
func.func @f() {
  loop.nest (%i, %j) = (0, 0) to (37, 13) {
    %ok = loop.in_bounds [%i, %j] map affine_map<(d0, d1) -> (d0 - 1, d1 - 1)> within (37, 13, 5)
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.in_bounds: map has 2 results but the buffer has rank 3

// -----

// loop.yield only terminates loop regions
func.func @f() {
  loop.yield
}

// CHECK: {{// -+}}
// CHECK-NEXT: 'loop.yield' expects parent op to be one of 'loop.nest', 'loop.tile', 'loop.reduce', 'simd.loop'

// -----

// launch runs on tensors (the graph level), not memrefs
func.func @f(%b: memref<37xf32>) {
  %r = loop.launch @k(%b) : (memref<37xf32>) -> tensor<37xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: memref<37xf32> should be of base attribute tensor

// -----

// kernel_info needs every property
loop.kernel_info {num_args = 1 : i64, parallel = array<i64: 1>, scratch_dims = array<i64>, kernel = "k", phases = ["k_p0"], buffers = [memref<37xf32>], work = array<i64: 37>}

// CHECK: {{// -+}}
// CHECK-NEXT: property 'target' expected in operation 'loop.kernel_info'

// -----

// kernel_info: more arguments than buffers
loop.kernel_info {num_args = 3 : i64, parallel = array<i64: 1, 1>, scratch_dims = array<i64>, kernel = "k", phases = ["k_p0", "k_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>], work = array<i64: 37, 37>, target = "x86-64"}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.kernel_info: num_args is 3 but there are 2 buffers

// -----

// kernel_info: one parallel entry per phase
loop.kernel_info {num_args = 2 : i64, parallel = array<i64: 1>, scratch_dims = array<i64>, kernel = "k", phases = ["k_p0", "k_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>], work = array<i64: 37, 37>, target = "x86-64"}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.kernel_info: 2 phases but 1 parallel entries

// -----

// kernel_info: a phase cannot have fewer than 0 parallel dims
loop.kernel_info {num_args = 2 : i64, parallel = array<i64: 1, -1>, scratch_dims = array<i64>, kernel = "k", phases = ["k_p0", "k_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>], work = array<i64: 37, 37>, target = "x86-64"}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.kernel_info: a phase's parallel dims must be >= 0

// -----

// kernel_info: one (argument, dim) pair per dynamic dim of the scratch buffers
loop.kernel_info {num_args = 1 : i64, parallel = array<i64: 1, 1>, scratch_dims = array<i64>, kernel = "k", phases = ["k_p0", "k_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>], work = array<i64: 37, 37>, target = "x86-64"}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.kernel_info: the scratch buffers have 1 dynamic dims but scratch_dims has 0 (argument, dim) pairs

// -----

// kernel_info: a scratch dim names a dim of an argument (or the batch: -1, -1)
loop.kernel_info {num_args = 1 : i64, parallel = array<i64: 1, 1>, scratch_dims = array<i64: 0, 2>, kernel = "k", phases = ["k_p0", "k_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>], work = array<i64: 37, 37>, target = "x86-64"}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.kernel_info: scratch_dims pair (0, 2) is neither a dim of one of the 1 arguments nor (-1, -1)

// -----

// kernel_info: scratch_dims holds pairs
loop.kernel_info {num_args = 1 : i64, parallel = array<i64: 1, 1>, scratch_dims = array<i64: 0>, kernel = "k", phases = ["k_p0", "k_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>], work = array<i64: 37, 37>, target = "x86-64"}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.kernel_info: scratch_dims must hold (argument, dim) pairs

// -----

// kernel_info: the launch shape describes every phase
loop.kernel_info {num_args = 2 : i64, parallel = array<i64: 1, 1>, scratch_dims = array<i64>, gpu_launch = #loop.gpu_launch<lanes = [37], tiles = [0], groups = [1], arch = "sm_90">, kernel = "k", phases = ["k_p0", "k_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>], work = array<i64: 37, 37>, target = "nvptx"}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.kernel_info: 2 phases but gpu_launch describes 1

// -----

// gpu_launch: a lane and a tile entry per phase
loop.kernel_info {num_args = 2 : i64, parallel = array<i64: 1, 1>, scratch_dims = array<i64>, gpu_launch = #loop.gpu_launch<lanes = [37, 37], tiles = [0], groups = [2], arch = "sm_90">, kernel = "k", phases = ["k_p0", "k_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>], work = array<i64: 37, 37>, target = "nvptx"}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.gpu_launch: 2 lane entries but 1 tile entries

// -----

// gpu_launch: the launch groups run every phase once
loop.kernel_info {num_args = 2 : i64, parallel = array<i64: 1, 1>, scratch_dims = array<i64>, gpu_launch = #loop.gpu_launch<lanes = [37, 37], tiles = [0, 0], groups = [1, 2], arch = "sm_90">, kernel = "k", phases = ["k_p0", "k_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>], work = array<i64: 37, 37>, target = "nvptx"}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.gpu_launch: the launch groups run 3 phases but there are 2 lane entries

// -----

// gpu_launch: no empty launch
loop.kernel_info {num_args = 2 : i64, parallel = array<i64: 1, 1>, scratch_dims = array<i64>, gpu_launch = #loop.gpu_launch<lanes = [37, 37], tiles = [0, 0], groups = [2, 0], arch = "sm_90">, kernel = "k", phases = ["k_p0", "k_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>], work = array<i64: 37, 37>, target = "nvptx"}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.gpu_launch: every launch group runs at least one phase

// -----

// gpu_launch: lane and tile counts are not negative
loop.kernel_info {num_args = 2 : i64, parallel = array<i64: 1, 1>, scratch_dims = array<i64>, gpu_launch = #loop.gpu_launch<lanes = [37, -1], tiles = [0, 0], groups = [2], arch = "sm_90">, kernel = "k", phases = ["k_p0", "k_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>], work = array<i64: 37, 37>, target = "nvptx"}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.gpu_launch: lane and tile counts must be >= 0

// -----

// gpu_launch: an NVIDIA architecture
loop.kernel_info {num_args = 2 : i64, parallel = array<i64: 1, 1>, scratch_dims = array<i64>, gpu_launch = #loop.gpu_launch<lanes = [37, 37], tiles = [0, 0], groups = [2], arch = "gfx90a">, kernel = "k", phases = ["k_p0", "k_p1"], buffers = [memref<?x37xf32>, memref<?x37xf32>], work = array<i64: 37, 37>, target = "nvptx"}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.gpu_launch: arch must be an SM architecture such as sm_90, got 'gfx90a'

// -----

// loop.tile: `parallel` may not exceed the tile's rank (loop.nest checks this)
func.func @gap_tile_parallel() {
  loop.tile parallel 3 (%t, %u) = (0, 0) to (37, 13) step (8, 5) {
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.tile: {{.*}}parallel

// -----

// loop.store: the stored value has the buffer's element type
func.func @gap_store_type(%b: memref<37xf32>) {
  loop.nest (%i) = (0) to (37) {
    %z = arith.constant 0.0 : f64
    loop.store %z, %b[%i] : f64, memref<37xf32>
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.store: {{.*}}f64

// -----

// loop.load: the result has the buffer's element type
func.func @gap_load_type(%b: memref<37xf32>) {
  loop.nest (%i) = (0) to (37) {
    %v = "loop.load"(%b, %i) <{map = affine_map<(d0) -> (d0)>}> : (memref<37xf32>, index) -> i32
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.load: {{.*}}i32

// -----

// loop.nest and loop.tile yield no values (only loop.reduce does)
func.func @gap_nest_yield() {
  loop.nest (%i) = (0) to (37) {
    %z = arith.constant 0.0 : f32
    loop.yield %z : f32
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: {{.*}}loop.{{(nest|yield)}}

// -----

// loop.reduce: the result is f32 (or !simd.vec<f32> after vectorization)
func.func @gap_reduce_type() {
  loop.nest (%i) = (0) to (37) {
    %m = loop.reduce add (%k) = (0) to (3) init 0.0 : f32 -> i32 {
      %z = arith.constant 0 : i32
      loop.yield %z : i32
    }
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.reduce: {{.*}}i32

// -----

// loop.reduce: only an add reduction may contract its products into FMAs
func.func @gap_contract_max() {
  loop.nest (%i) = (0) to (37) {
    %m = loop.reduce max contract (%k) = (0) to (3) init 0.0 : f32 -> f32 {
      %z = arith.constant 0.0 : f32
      loop.yield %z : f32
    }
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.reduce: only an add reduction contracts

// -----

// loop.reduce: one yielded value per accumulator
func.func @gap_reduce_yields() {
  loop.nest (%i) = (0) to (37) {
    %a, %b = loop.reduce add (%k) = (0) to (3) init 0.0 : f32 -> f32, f32 {
      %z = arith.constant 0.0 : f32
      loop.yield %z : f32
    }
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.reduce: body must end in loop.yield of 2 values

// -----

// loop.pieces: buffers of one type
func.func @f(%a: memref<?x3x16xf32>, %b: memref<?x3x32xf32>) attributes {bs.kernel} {
  %t = loop.pieces %a, %b : memref<?x3x16xf32>, memref<?x3x32xf32> -> memref<?x3x48xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.pieces takes two or more buffers of one type

// -----

// loop.pieces: its type is the pieces side by side along the last dim
func.func @f(%a: memref<?x3x16xf32>, %b: memref<?x3x16xf32>) attributes {bs.kernel} {
  %t = loop.pieces %a, %b : memref<?x3x16xf32>, memref<?x3x16xf32> -> memref<?x6x16xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.pieces of 2 memref<?x3x16xf32> must be memref<?x3x32xf32>

// -----

// loop.pieces: consecutive arguments of its kernel (their slots are evenly spaced)
func.func @f(%a: memref<?x3x16xf32>, %x: memref<?x3x16xf32>, %b: memref<?x3x16xf32>) attributes {bs.kernel} {
  %t = loop.pieces %a, %b : memref<?x3x16xf32>, memref<?x3x16xf32> -> memref<?x3x32xf32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.pieces reads consecutive arguments of its kernel

// -----

// `unroll` names one of the reduction's dims
func.func @f() {
  loop.nest (%i) = (0) to (37) {
    %m = loop.reduce add unroll 2 (%kh, %kw) = (0, 0) to (3, 3) init 0.0 : f32 -> f32 {
      %z = arith.constant 0.0 : f32
      loop.yield %z : f32
    }
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.reduce: unroll 2 names no dim of its 2

// -----

// the dims it unrolls have static bounds
func.func @f(%n: index) {
  loop.nest (%i) = (0) to (37) {
    %m = loop.reduce add unroll 1 (%kh, %kw) = (0, 0) to (3, %n) init 0.0 : f32 -> f32 {
      %z = arith.constant 0.0 : f32
      loop.yield %z : f32
    }
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.reduce: the dims it unrolls need static bounds

// -----

// at most MAX_UNROLLED_STEPS steps
func.func @f() {
  loop.nest (%i) = (0) to (37) {
    %m = loop.reduce add unroll 0 (%kh, %kw) = (0, 0) to (9, 9) init 0.0 : f32 -> f32 {
      %z = arith.constant 0.0 : f32
      loop.yield %z : f32
    }
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: loop.reduce: unrolls 81 steps, at most 64
