// RUN: bs-opt %s | filecheck %s
// RUN: bs-opt %s | bs-opt | filecheck %s
// RUN: bs-opt %s --print-op-generic | bs-opt | filecheck %s
// RUN: bs-opt %s --print-op-generic | filecheck %s --check-prefix=GENERIC

// Every simd op in its custom form (a vectorized kernel: a lane loop inside a
// nest), printed, re-parsed, and re-parsed from the generic form. GENERIC pins
// the properties that the custom syntax spells as keywords or strings.

func.func @lanes(%x: memref<?x37x13x13xf32>, %p: memref<37xf32>, %out: memref<?x37x13x13xf32>, %red: memref<37xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  loop.nest parallel 3 (%n, %c, %h) = (0, 0, 0) to (%batch, 37, 13) {
    simd.loop (%w) = (0) to (13) {
      %v = simd.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
      %sh = simd.load %x[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3 * 2 - 1)> pad 0xFF800000 : f32 : memref<?x37x13x13xf32>
      %ok = simd.in_bounds [%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3 * 2 - 1)> within (%batch, 37, 13, 13)
      %a = loop.load %p[%c] : memref<37xf32>
      %as = simd.splat %a : f32
      %i = simd.iota %w : !simd.vec<index>
      %f = simd.sitofp %i : !simd.vec<index> -> !simd.vec<f32>
      %0 = simd.addf %v, %as : !simd.vec<f32>
      %1 = simd.subf %0, %f : !simd.vec<f32>
      %2 = simd.mulf %1, %sh : !simd.vec<f32>
      %3 = simd.divf %2, %as : !simd.vec<f32>
      %4 = simd.negf %3 : !simd.vec<f32>
      %fm = simd.fma %3, %as, %4 : !simd.vec<f32>
      %5 = simd.math "exp" %4 : !simd.vec<f32>
      %6 = simd.math "log" %5 : !simd.vec<f32>
      %7 = simd.math "tanh" %6 : !simd.vec<f32>
      %8 = simd.math "erf" %7 : !simd.vec<f32>
      %9 = simd.math "sqrt" %8 : !simd.vec<f32>
      %lt = simd.cmpf "olt" %9, %as : !simd.vec<f32>
      %10 = simd.select %lt, %as, %9 : !simd.vec<f32>
      %11 = simd.select %ok, %10, %sh : !simd.vec<f32>
      %c3 = arith.constant 3 : index
      %k = simd.splat %c3 : index
      %i0 = simd.addi %i, %k : !simd.vec<index>
      %i1 = simd.subi %i0, %k : !simd.vec<index>
      %i2 = simd.muli %i1, %k : !simd.vec<index>
      %i3 = simd.divsi %i2, %k : !simd.vec<index>
      %i4 = simd.floordivsi %i3, %k : !simd.vec<index>
      %i5 = simd.remsi %i4, %k : !simd.vec<index>
      %i6 = simd.minsi %i5, %k : !simd.vec<index>
      %i7 = simd.maxsi %i6, %i : !simd.vec<index>
      %ge = simd.cmpi "sge" %i7, %k : !simd.vec<index>
      %m0 = simd.andi %ge, %ok : !simd.vec<i1>
      %m1 = simd.ori %m0, %lt : !simd.vec<i1>
      %12 = simd.select %m1, %11, %v : !simd.vec<f32>
      %mx = loop.reduce max (%kh) = (0) to (3) init 0xFF800000 : f32 -> !simd.vec<f32> {
        %t = simd.load %x[%n, %c, %kh, %w] : memref<?x37x13x13xf32>
        loop.yield %t : !simd.vec<f32>
      }
      %13 = simd.addf %12, %mx : !simd.vec<f32>
      simd.store %13, %out[%n, %c, %h, %w] : memref<?x37x13x13xf32>
    }
  }
  loop.nest () = () to () {
    simd.loop (%j) = (%c0) to (37) attributes {note = "tail"} {
      %u = simd.load %red[%j] : memref<37xf32>
      %sum = simd.reduce "add" %u : !simd.vec<f32>
      %max = simd.reduce "max" %u : !simd.vec<f32>
      %d = arith.subf %sum, %max : f32
      %ds = simd.splat %d : f32
      simd.store %ds, %red[%j] map affine_map<(d0) -> (36 - d0)> : memref<37xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @lanes
// CHECK-SAME:    attributes {bs.kernel}
// CHECK-NEXT:    %c0 = arith.constant 0 : index
// CHECK-NEXT:    %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
// CHECK-NEXT:    loop.nest parallel 3 (%n, %c, %h) = (0, 0, 0) to (%batch, 37, 13) {
// CHECK-NEXT:      simd.loop (%w) = (0) to (13) {
// CHECK-NEXT:        %v = simd.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
// CHECK-NEXT:        %sh = simd.load %x[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, ((d3 * 2) + -1))> pad 0xff800000 : f32 : memref<?x37x13x13xf32>
// CHECK-NEXT:        %ok = simd.in_bounds [%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, ((d3 * 2) + -1))> within (%batch, 37, 13, 13)
// CHECK-NEXT:        %a = loop.load %p[%c] : memref<37xf32>
// CHECK-NEXT:        %as = simd.splat %a : f32
// CHECK-NEXT:        %i = simd.iota %w : !simd.vec<index>
// CHECK-NEXT:        %f = simd.sitofp %i : !simd.vec<index> -> !simd.vec<f32>
// CHECK-NEXT:        %0 = simd.addf %v, %as : !simd.vec<f32>
// CHECK-NEXT:        %1 = simd.subf %0, %f : !simd.vec<f32>
// CHECK-NEXT:        %2 = simd.mulf %1, %sh : !simd.vec<f32>
// CHECK-NEXT:        %3 = simd.divf %2, %as : !simd.vec<f32>
// CHECK-NEXT:        %4 = simd.negf %3 : !simd.vec<f32>
// CHECK-NEXT:        %fm = simd.fma %3, %as, %4 : !simd.vec<f32>
// CHECK-NEXT:        %5 = simd.math "exp" %4 : !simd.vec<f32>
// CHECK-NEXT:        %6 = simd.math "log" %5 : !simd.vec<f32>
// CHECK-NEXT:        %7 = simd.math "tanh" %6 : !simd.vec<f32>
// CHECK-NEXT:        %8 = simd.math "erf" %7 : !simd.vec<f32>
// CHECK-NEXT:        %9 = simd.math "sqrt" %8 : !simd.vec<f32>
// CHECK-NEXT:        %lt = simd.cmpf "olt" %9, %as : !simd.vec<f32>
// CHECK-NEXT:        %10 = simd.select %lt, %as, %9 : !simd.vec<f32>
// CHECK-NEXT:        %11 = simd.select %ok, %10, %sh : !simd.vec<f32>
// CHECK-NEXT:        %c3 = arith.constant 3 : index
// CHECK-NEXT:        %k = simd.splat %c3 : index
// CHECK-NEXT:        %i0 = simd.addi %i, %k : !simd.vec<index>
// CHECK-NEXT:        %i1 = simd.subi %i0, %k : !simd.vec<index>
// CHECK-NEXT:        %i2 = simd.muli %i1, %k : !simd.vec<index>
// CHECK-NEXT:        %i3 = simd.divsi %i2, %k : !simd.vec<index>
// CHECK-NEXT:        %i4 = simd.floordivsi %i3, %k : !simd.vec<index>
// CHECK-NEXT:        %i5 = simd.remsi %i4, %k : !simd.vec<index>
// CHECK-NEXT:        %i6 = simd.minsi %i5, %k : !simd.vec<index>
// CHECK-NEXT:        %i7 = simd.maxsi %i6, %i : !simd.vec<index>
// CHECK-NEXT:        %ge = simd.cmpi "sge" %i7, %k : !simd.vec<index>
// CHECK-NEXT:        %m0 = simd.andi %ge, %ok : !simd.vec<i1>
// CHECK-NEXT:        %m1 = simd.ori %m0, %lt : !simd.vec<i1>
// CHECK-NEXT:        %12 = simd.select %m1, %11, %v : !simd.vec<f32>
// CHECK-NEXT:        %mx = loop.reduce max (%kh) = (0) to (3) init 0xff800000 : f32 -> !simd.vec<f32> {
// CHECK-NEXT:          %t = simd.load %x[%n, %c, %kh, %w] : memref<?x37x13x13xf32>
// CHECK-NEXT:          loop.yield %t : !simd.vec<f32>
// CHECK-NEXT:        }
// CHECK-NEXT:        %13 = simd.addf %12, %mx : !simd.vec<f32>
// CHECK-NEXT:        simd.store %13, %out[%n, %c, %h, %w] : memref<?x37x13x13xf32>
// CHECK-NEXT:      }
// CHECK-NEXT:    }
// CHECK-NEXT:    loop.nest () = () to () {
// CHECK-NEXT:      simd.loop (%j) = (%c0) to (37) attributes {note = "tail"} {
// CHECK-NEXT:        %u = simd.load %red[%j] : memref<37xf32>
// CHECK-NEXT:        %sum = simd.reduce "add" %u : !simd.vec<f32>
// CHECK-NEXT:        %max = simd.reduce "max" %u : !simd.vec<f32>
// CHECK-NEXT:        %d = arith.subf %sum, %max : f32
// CHECK-NEXT:        %ds = simd.splat %d : f32
// CHECK-NEXT:        simd.store %ds, %red[%j] map affine_map<(d0) -> (((d0 * -1) + 36))> : memref<37xf32>
// CHECK-NEXT:      }
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return
// CHECK-NEXT:  }

// GENERIC-LABEL: "func.func"() <{sym_name = "lanes"
// GENERIC:         "simd.loop"() <{lower = array<i64: 0>, upper = array<i64: 13>, operandSegmentSizes = array<i32: 0, 0>}> ({
// GENERIC-NEXT:    ^bb0(%w: index):
// GENERIC-NEXT:      %v = "simd.load"(%x, %n, %c, %h, %w) <{map = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>}> : (memref<?x37x13x13xf32>, index, index, index, index) -> !simd.vec<f32>
// GENERIC-NEXT:      %sh = "simd.load"(%x, %n, %c, %h, %w) <{map = affine_map<{{.*}}>, pad = 0xff800000 : f32}> : (memref<?x37x13x13xf32>, index, index, index, index) -> !simd.vec<f32>
// GENERIC-NEXT:      %ok = "simd.in_bounds"(%batch, %n, %c, %h, %w) <{extents = array<i64: -9223372036854775808, 37, 13, 13>, map = affine_map<{{.*}}>, operandSegmentSizes = array<i32: 1, 4>}> : (index, index, index, index, index) -> !simd.vec<i1>
// GENERIC:           %as = "simd.splat"(%a) : (f32) -> !simd.vec<f32>
// GENERIC-NEXT:      %i = "simd.iota"(%w) : (index) -> !simd.vec<index>
// GENERIC-NEXT:      %f = "simd.sitofp"(%i) : (!simd.vec<index>) -> !simd.vec<f32>
// GENERIC:           %4 = "simd.negf"(%3) : (!simd.vec<f32>) -> !simd.vec<f32>
// GENERIC-NEXT:      %fm = "simd.fma"(%3, %as, %4) : (!simd.vec<f32>, !simd.vec<f32>, !simd.vec<f32>) -> !simd.vec<f32>
// GENERIC-NEXT:      %5 = "simd.math"(%4) <{fn = "exp"}> : (!simd.vec<f32>) -> !simd.vec<f32>
// GENERIC:           %lt = "simd.cmpf"(%9, %as) <{predicate = "olt"}> : (!simd.vec<f32>, !simd.vec<f32>) -> !simd.vec<i1>
// GENERIC-NEXT:      %10 = "simd.select"(%lt, %as, %9) : (!simd.vec<i1>, !simd.vec<f32>, !simd.vec<f32>) -> !simd.vec<f32>
// GENERIC:           %ge = "simd.cmpi"(%i7, %k) <{predicate = "sge"}> : (!simd.vec<index>, !simd.vec<index>) -> !simd.vec<i1>
// GENERIC-NEXT:      %m0 = "simd.andi"(%ge, %ok) : (!simd.vec<i1>, !simd.vec<i1>) -> !simd.vec<i1>
// GENERIC:           "simd.store"(%13, %out, %n, %c, %h, %w) <{map = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, operandSegmentSizes = array<i32: 1, 1, 4, 0>}> : (!simd.vec<f32>, memref<?x37x13x13xf32>, index, index, index, index) -> ()
// GENERIC-NEXT:      "loop.yield"() : () -> ()
// GENERIC:         "simd.loop"(%c0) <{lower = array<i64: -9223372036854775808>, upper = array<i64: 37>, operandSegmentSizes = array<i32: 1, 0>}> ({
// GENERIC:           %sum = "simd.reduce"(%u) <{kind = "add"}> : (!simd.vec<f32>) -> f32
// GENERIC-NEXT:      %max = "simd.reduce"(%u) <{kind = "max"}> : (!simd.vec<f32>) -> f32
// GENERIC:         }) {note = "tail"} : (index) -> ()

// simd.reduce_loop: a lane loop whose yielded vectors combine into one scalar.
func.func @reduce_loop(%x: memref<3x37xf32>, %o: memref<3xf32>) {
  loop.nest (%r) = (0) to (3) {
    %s = simd.reduce_loop max (%k) = (0) to (37) init 0xff800000 : f32 {
      %v = simd.load %x[%r, %k] : memref<3x37xf32>
      loop.yield %v : !simd.vec<f32>
    }
    loop.store %s, %o[%r] : f32, memref<3xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @reduce_loop
// CHECK:         %s = simd.reduce_loop max (%k) = (0) to (37) init 0xff800000 : f32 {
// CHECK-NEXT:      %v = simd.load %x[%r, %k] : memref<3x37xf32>
// CHECK-NEXT:      loop.yield %v : !simd.vec<f32>
// CHECK-NEXT:    }
// CHECK-NEXT:    loop.store %s, %o[%r] : f32, memref<3xf32>
