// RUN: bs-opt %s --split-input-file --verify-diagnostics | filecheck %s

// One invalid simd op per split. Each CHECK pair matches the split separator
// that bs-opt prints and, on the next line, the verifier's message.

// lane accesses only exist inside a lane loop
func.func @f(%b: memref<37xf32>) {
  loop.nest (%i) = (0) to (37) {
    %v = simd.load %b[%i] : memref<37xf32>
  }
  func.return
}

// CHECK: simd.load must be inside a simd.loop

// -----

// simd.store too
func.func @f(%b: memref<37xf32>, %v: !simd.vec<f32>) {
  loop.nest (%i) = (0) to (37) {
    simd.store %v, %b[%i] : memref<37xf32>
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.store must be inside a simd.loop

// -----

// a store that ignores the lane iv would make every lane write one address
func.func @f(%b: memref<37x13xf32>, %v: !simd.vec<f32>) {
  loop.nest (%i) = (0) to (37) {
    simd.loop (%j) = (0) to (13) {
      simd.store %v, %b[%i, %i] : memref<37x13xf32>
    }
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.store: the map must use the lane loop's iv (lanes would collide)

// -----

// simd.in_bounds is per lane, so inside a lane loop
func.func @f() {
  loop.nest (%i) = (0) to (37) {
    %m = simd.in_bounds [%i] map affine_map<(d0) -> (d0 - 1)> within (37)
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.in_bounds must be inside a simd.loop

// -----

// lane accesses share loop's map checks
func.func @f(%b: memref<37x13xf32>) {
  simd.loop (%j) = (0) to (13) {
    %v = simd.load %b[%j] : memref<37x13xf32>
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.load: map has 1 results but the buffer has rank 2

// -----

// float ops take float lanes
func.func @f(%a: !simd.vec<i32>) {
  %r = simd.addf %a, %a : !simd.vec<i32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.addf: expects vectors of f32

// -----

// integer ops take integer or index lanes
func.func @f(%a: !simd.vec<f32>) {
  %r = simd.muli %a, %a : !simd.vec<f32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.muli: expects vectors of integer/index

// -----

// generic form: both operands have the result type
func.func @f(%a: !simd.vec<f32>, %b: !simd.vec<i32>) {
  %r = "simd.subf"(%a, %b) : (!simd.vec<f32>, !simd.vec<i32>) -> !simd.vec<f32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.subf: operand type !simd.vec<i32> differs from result type !simd.vec<f32>

// -----

// only the functions the backends implement
func.func @f(%a: !simd.vec<f32>) {
  %r = simd.math "cos" %a : !simd.vec<f32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.math: unknown function 'cos'

// -----

// math functions take float lanes
func.func @f(%a: !simd.vec<i32>) {
  %r = simd.math "exp" %a : !simd.vec<i32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.math: expects vectors of f32

// -----

// cmpf takes arith.cmpf predicates
func.func @f(%a: !simd.vec<f32>) {
  %r = simd.cmpf "slt" %a, %a : !simd.vec<f32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.cmpf: unknown predicate 'slt'

// -----

// cmpi takes arith.cmpi predicates
func.func @f(%a: !simd.vec<index>) {
  %r = simd.cmpi "olt" %a, %a : !simd.vec<index>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.cmpi: unknown predicate 'olt'

// -----

// generic form: compared operands have one type
func.func @f(%a: !simd.vec<f32>, %b: !simd.vec<i32>) {
  %r = "simd.cmpf"(%a, %b) <{predicate = "olt"}> : (!simd.vec<f32>, !simd.vec<i32>) -> !simd.vec<i1>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.cmpf: operands differ in type

// -----

// the condition is a lane mask
func.func @f(%a: !simd.vec<f32>) {
  %r = "simd.select"(%a, %a, %a) : (!simd.vec<f32>, !simd.vec<f32>, !simd.vec<f32>) -> !simd.vec<f32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.select: condition must be !simd.vec<i1>

// -----

// both selected values have the result type
func.func @f(%c: !simd.vec<i1>, %a: !simd.vec<f32>, %b: !simd.vec<i32>) {
  %r = "simd.select"(%c, %a, %b) : (!simd.vec<i1>, !simd.vec<f32>, !simd.vec<i32>) -> !simd.vec<f32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.select: both values must have the result type

// -----

// only add and max reductions
func.func @f(%a: !simd.vec<f32>) {
  %r = simd.reduce "min" %a : !simd.vec<f32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.reduce: unknown kind 'min'

// -----

// an empty lane range
func.func @f() {
  simd.loop (%j) = (13) to (0) {
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.loop: empty or negative range 13 to 0

// -----

// lane-wise results are !simd.vec
func.func @f(%a: !simd.vec<f32>) {
  %r = "simd.addf"(%a, %a) : (!simd.vec<f32>, !simd.vec<f32>) -> f32
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: result 'result' at position 0 does not verify:
// CHECK-NEXT: f32 should be of base attribute simd.vec

// -----

// generic form: a lane loop has exactly one induction variable (the parser enforces it, the verifier doesn't)
func.func @gap_loop_rank() {
  "simd.loop"() <{lower = array<i64: 0, 0>, upper = array<i64: 4, 4>, operandSegmentSizes = array<i32: 0, 0>}> ({
  ^bb0(%i: index, %j: index):
    "loop.yield"() : () -> ()
  }) : () -> ()
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.loop:

// -----

// fma is on floats
func.func @gap_fma_int(%a: !simd.vec<i32>) {
  %r = simd.fma %a, %a, %a : !simd.vec<i32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.fma: {{.*}}f32

// -----

// negf is float negation
func.func @gap_negf_int(%a: !simd.vec<i32>) {
  %r = simd.negf %a : !simd.vec<i32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.negf: {{.*}}f32

// -----

// sitofp converts integer or index lanes
func.func @gap_sitofp_float(%a: !simd.vec<f32>) {
  %r = simd.sitofp %a : !simd.vec<f32> -> !simd.vec<f32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.sitofp:

// -----

// splat broadcasts a scalar, not a vector
func.func @gap_splat_vec(%a: !simd.vec<f32>) {
  %r = simd.splat %a : !simd.vec<f32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.splat:

// -----

// iota lanes are index values (base + l)
func.func @gap_iota_type(%i: index) {
  %r = simd.iota %i : !simd.vec<f32>
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.iota:

// -----

// reduce returns the lane type
func.func @gap_reduce_type(%a: !simd.vec<f32>) {
  %r = "simd.reduce"(%a) <{kind = "add"}> : (!simd.vec<f32>) -> i32
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.reduce:

// -----

// a lane store writes the buffer's element type
func.func @gap_store_type(%b: memref<37xf32>, %v: !simd.vec<i32>) {
  simd.loop (%j) = (0) to (37) {
    "simd.store"(%v, %b, %j) <{map = affine_map<(d0) -> (d0)>, operandSegmentSizes = array<i32: 1, 1, 1, 0>}> : (!simd.vec<i32>, memref<37xf32>, index) -> ()
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.store:

// -----

// a lane load reads the buffer's element type
func.func @gap_load_type(%b: memref<37xf32>) {
  simd.loop (%j) = (0) to (37) {
    %v = "simd.load"(%b, %j) <{map = affine_map<(d0) -> (d0)>}> : (memref<37xf32>, index) -> !simd.vec<i32>
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.load:

// -----

// a store whose map drops the lane iv makes every lane write one address, even
// when the iv is among the indices
func.func @gap_store_map_drops_lane(%b: memref<29xf32>, %v: !simd.vec<f32>) {
  loop.nest (%i) = (0) to (29) {
    simd.loop (%j) = (0) to (37) {
      simd.store %v, %b[%i, %j] map affine_map<(d0, d1) -> (d0)> : memref<29xf32>
    }
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.store: {{.*}}lane

// -----

// a register block spans at least one machine vector
func.func @gap_vectors(%b: memref<37xf32>) {
  simd.loop (%j) = (0) to (37) vectors 0 {
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.loop: vectors must be positive, got 0

// -----

// a reducing lane loop yields the vector it adds up
func.func @reduce_scalar(%x: memref<37xf32>) {
  %s = simd.reduce_loop add (%k) = (0) to (37) init 0.0 : f32 {
    %v = arith.constant 1.0 : f32
    loop.yield %v : f32
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.reduce_loop: the body yields one !simd.vec value

// -----

// prefetch localities are those of llvm.prefetch, 0 to 3
func.func @far_prefetch(%w: memref<64xf32>) {
  simd.loop (%c) = (0) to (64) {
    simd.prefetch %w[%c] locality 4 : memref<64xf32>
  }
  func.return
}

// CHECK: {{// -+}}
// CHECK-NEXT: simd.prefetch: locality 4 is not 0 to 3
