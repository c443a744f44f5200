// RUN: bs-opt %s -p bs-vectorize | filecheck %s
// RUN: bs-opt %s -p bs-vectorize,bs-vectorize | filecheck %s

// bs-vectorize turns the innermost dim of every innermost loop.nest into a
// simd.loop. Lane-varying values become !simd.vec, uniform ones stay scalar and
// are broadcast with simd.splat where they meet vectors. Nests it can't
// vectorize stay scalar with the reason in `bs.scalar`. Running it twice
// changes nothing (second RUN line).

// BN * alpha then ReLU (NCHW): w is the lane dim; alpha[c] is uniform across
// lanes, so it is a scalar loop.load plus a splat; so is the 0 of the ReLU.
func.func @bn_relu(%x: memref<?x37x13x13xf32>, %alpha: memref<37xf32>, %out: memref<?x37x13x13xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 13, 13) {
    %v = loop.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
    %a = loop.load %alpha[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d1)> : memref<37xf32>
    %m = arith.mulf %v, %a : f32
    %z = arith.constant 0.0 : f32
    %lt = arith.cmpf olt, %m, %z : f32
    %r = arith.select %lt, %z, %m : f32
    %e = math.exp %r : f32
    %ng = arith.negf %e : f32
    loop.store %ng, %out[%n, %c, %h, %w] : f32, memref<?x37x13x13xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @bn_relu
// CHECK:         loop.nest (%n, %c, %h) = (0, 0, 0) to (%batch, 37, 13) {
// CHECK-NEXT:      simd.loop (%w) = (0) to (13) {
// CHECK-NEXT:        %[[V:.+]] = simd.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
// CHECK-NEXT:        %a = loop.load %alpha[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d1)> : memref<37xf32>
// CHECK-NEXT:        %[[AS:.+]] = simd.splat %a : f32
// CHECK-NEXT:        %[[M:.+]] = simd.mulf %[[V]], %[[AS]] : !simd.vec<f32>
// CHECK-NEXT:        %z = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:        %[[ZS:.+]] = simd.splat %z : f32
// CHECK-NEXT:        %[[LT:.+]] = simd.cmpf "olt" %[[M]], %[[ZS]] : !simd.vec<f32>
// CHECK-NEXT:        %[[R:.+]] = simd.select %[[LT]], %[[ZS]], %[[M]] : !simd.vec<f32>
// CHECK-NEXT:        %[[E:.+]] = simd.math "exp" %[[R]] : !simd.vec<f32>
// CHECK-NEXT:        %[[NG:.+]] = simd.negf %[[E]] : !simd.vec<f32>
// CHECK-NEXT:        simd.store %[[NG]], %out[%n, %c, %h, %w] : memref<?x37x13x13xf32>
// CHECK-NEXT:      }
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return

// A fused multiply-add becomes simd.fma: lane-varying operands stay vectors,
// uniform ones are splat.
func.func @fma(%x: memref<?x37xf32>, %alpha: memref<37xf32>, %out: memref<?x37xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37xf32>
  loop.nest (%n, %c) = (0, 0) to (%batch, 37) {
    %v = loop.load %x[%n, %c] : memref<?x37xf32>
    %a = loop.load %alpha[%n, %c] map affine_map<(d0, d1) -> (d1)> : memref<37xf32>
    %b = arith.constant 0.5 : f32
    %y = math.fma %v, %a, %b : f32
    loop.store %y, %out[%n, %c] : f32, memref<?x37xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @fma
// CHECK:           simd.loop (%c) = (0) to (37) {
// CHECK-NEXT:        %[[V:.+]] = simd.load %x[%n, %c] : memref<?x37xf32>
// CHECK-NEXT:        %[[A:.+]] = simd.load %alpha[%n, %c] map affine_map<(d0, d1) -> (d1)> : memref<37xf32>
// CHECK-NEXT:        %b = arith.constant 5.000000e-01 : f32
// CHECK-NEXT:        %[[BS:.+]] = simd.splat %b : f32
// CHECK-NEXT:        %[[Y:.+]] = simd.fma %[[V]], %[[A]], %[[BS]] : !simd.vec<f32>
// CHECK-NEXT:        simd.store %[[Y]], %out[%n, %c] : memref<?x37xf32>

// A 1-D nest keeps an outer nest with no dims around its lane loop.
func.func @one_dim(%p: memref<37xf32>, %q: memref<37xf32>) attributes {bs.kernel} {
  loop.nest (%i) = (0) to (37) {
    %v = loop.load %p[%i] : memref<37xf32>
    %s = math.sqrt %v : f32
    loop.store %s, %q[%i] : f32, memref<37xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @one_dim
// CHECK-NEXT:    loop.nest () = () to () {
// CHECK-NEXT:      simd.loop (%i) = (0) to (37) {
// CHECK-NEXT:        %[[V:.+]] = simd.load %p[%i]
// CHECK-NEXT:        %[[S:.+]] = simd.math "sqrt" %[[V]]
// CHECK-NEXT:        simd.store %[[S]], %q[%i]
// CHECK-NEXT:      }
// CHECK-NEXT:    }

// A window (avg_pool without count_include_pad): the reduction yields vectors,
// the padded window load keeps its pad, and index math on the lane iv becomes
// simd.iota and integer lane ops, converted with simd.sitofp. Index math on
// other ivs stays scalar.
func.func @window(%x: memref<?x37x13x13xf32>, %out: memref<?x37x7x7xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
    %s = loop.reduce add (%kh, %kw) = (0, 0) to (3, 3) init 0.0 : f32 -> f32 {
      %e = loop.load %x[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4 - 1, d3 * 2 + d5 - 1)> pad 0.0 : f32 : memref<?x37x13x13xf32>
      loop.yield %e : f32
    }
    %two = arith.constant 2 : index
    %hh = arith.muli %h, %two : index
    %ww = arith.muli %w, %two : index
    %cnt = arith.addi %hh, %ww : index
    %ci = arith.index_cast %cnt : index to i64
    %cf = arith.sitofp %ci : i64 to f32
    %avg = arith.divf %s, %cf : f32
    loop.store %avg, %out[%n, %c, %h, %w] : f32, memref<?x37x7x7xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @window
// CHECK:         loop.nest (%n, %c, %h) = (0, 0, 0) to (%batch, 37, 7) {
// CHECK-NEXT:      simd.loop (%w) = (0) to (7) {
// CHECK-NEXT:        %[[S:.+]] = loop.reduce add (%kh, %kw) = (0, 0) to (3, 3) init 0.000000e+00 : f32 -> !simd.vec<f32> {
// CHECK-NEXT:          %[[E:.+]] = simd.load %x[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, (((d2 * 2) + d4) + -1), (((d3 * 2) + d5) + -1))> pad 0.000000e+00 : f32 : memref<?x37x13x13xf32>
// CHECK-NEXT:          loop.yield %[[E]] : !simd.vec<f32>
// CHECK-NEXT:        }
// CHECK-NEXT:        %two = arith.constant 2 : index
// CHECK-NEXT:        %hh = arith.muli %h, %two : index
// CHECK-NEXT:        %[[IOTA:.+]] = simd.iota %w : !simd.vec<index>
// CHECK-NEXT:        %[[TWO:.+]] = simd.splat %two : index
// CHECK-NEXT:        %[[WW:.+]] = simd.muli %[[IOTA]], %[[TWO]] : !simd.vec<index>
// CHECK-NEXT:        %[[HH:.+]] = simd.splat %hh : index
// CHECK-NEXT:        %[[CNT:.+]] = simd.addi %[[HH]], %[[WW]] : !simd.vec<index>
// CHECK-NEXT:        %[[CF:.+]] = simd.sitofp %[[CNT]] : !simd.vec<index> -> !simd.vec<f32>
// CHECK-NEXT:        %[[AVG:.+]] = simd.divf %[[S]], %[[CF]] : !simd.vec<f32>
// CHECK-NEXT:        simd.store %[[AVG]], %out[%n, %c, %h, %w]
// CHECK-NEXT:      }
// CHECK-NEXT:    }

// Nests inside a depth-first tile are vectorized too; the tile stays.
func.func @in_tile(%x: memref<?x37x13x13xf32>, %out: memref<?x37x13x13xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  loop.tile (%tn) = (0) to (%batch) step (1) {
    %c1 = arith.constant 1 : index
    %e = arith.addi %tn, %c1 : index
    loop.nest (%n, %c, %h, %w) = (%tn, 0, 0, 0) to (%e, 37, 13, 13) {
      %v = loop.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
      loop.store %v, %out[%n, %c, %h, %w] : f32, memref<?x37x13x13xf32>
    }
  }
  func.return
}

// CHECK-LABEL: func.func @in_tile
// CHECK:         loop.tile (%tn) = (0) to (%batch) step (1) {
// CHECK:           loop.nest (%n, %c, %h) = (%tn, 0, 0) to (%e, 37, 13) {
// CHECK-NEXT:        simd.loop (%w) = (0) to (13) {
// CHECK-NEXT:          %[[V:.+]] = simd.load %x
// CHECK-NEXT:          simd.store %[[V]], %out
// CHECK-NEXT:        }
// CHECK-NEXT:      }
// CHECK-NEXT:    }

// Left alone (scalar, with the reason): a store that does not use the lane
// iv (every lane would write out[i]) ...
func.func @no_lane_store(%x: memref<29x37xf32>, %out: memref<29xf32>) attributes {bs.kernel} {
  loop.nest (%i, %j) = (0, 0) to (29, 37) {
    %v = loop.load %x[%i, %j] : memref<29x37xf32>
    loop.store %v, %out[%i] : f32, memref<29xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @no_lane_store
// CHECK-NOT:     simd.
// CHECK:         loop.nest (%i, %j) = (0, 0) to (29, 37) attributes {bs.scalar = "a store does not involve the lane dimension"} {
// CHECK-NEXT:      %v = loop.load %x[%i, %j]
// CHECK-NEXT:      loop.store %v, %out[%i]
// CHECK-NEXT:    }

// ... a load at an index computed from the lane iv (a gather) ...
func.func @computed_index(%x: memref<29x74xf32>, %out: memref<29x37xf32>) attributes {bs.kernel} {
  loop.nest (%i, %j) = (0, 0) to (29, 37) {
    %two = arith.constant 2 : index
    %j2 = arith.muli %j, %two : index
    %v = loop.load %x[%i, %j2] : memref<29x74xf32>
    loop.store %v, %out[%i, %j] : f32, memref<29x37xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @computed_index
// CHECK-NOT:     simd.
// CHECK:         loop.nest (%i, %j) = (0, 0) to (29, 37) attributes {bs.scalar = "loop.load indexes with a computed lane-varying value"} {
// CHECK-NEXT:      arith.constant 2 : index
// CHECK-NEXT:      arith.muli %j
// CHECK-NEXT:      loop.load %x[%i, %j2]

// ... and a reduction whose bounds depend on the lane iv (adaptive pooling).
func.func @varying_bounds(%x: memref<?x37x13x13xf32>, %out: memref<?x37x5x4xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 5, 4) {
    %k3 = arith.constant 3 : index
    %w0 = arith.muli %w, %k3 : index
    %w1 = arith.addi %w0, %k3 : index
    %s = loop.reduce add (%kh, %kw) = (0, %w0) to (3, %w1) init 0.0 : f32 -> f32 {
      %e = loop.load %x[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4, d5)> : memref<?x37x13x13xf32>
      loop.yield %e : f32
    }
    loop.store %s, %out[%n, %c, %h, %w] : f32, memref<?x37x5x4xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @varying_bounds
// CHECK-NOT:     simd.
// CHECK:         loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 5, 4) attributes {bs.scalar = "a reduction's bounds vary across lanes"} {
// CHECK:           loop.reduce add (%kh, %kw) = (0, %w0) to (3, %w1) init 0.000000e+00 : f32 -> f32 {

// The store names the lane iv j but its map drops it: lanes would collide, so
// the nest stays scalar, like @no_lane_store.
func.func @map_drops_lane(%x: memref<29x37xf32>, %out: memref<29xf32>) attributes {bs.kernel} {
  loop.nest (%i, %j) = (0, 0) to (29, 37) {
    %v = loop.load %x[%i, %j] : memref<29x37xf32>
    loop.store %v, %out[%i, %j] map affine_map<(d0, d1) -> (d0)> : f32, memref<29xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @map_drops_lane
// CHECK-NOT:     simd.
// CHECK:         loop.nest (%i, %j) = (0, 0) to (29, 37) attributes {bs.scalar = "{{.+}}"} {
// CHECK-NOT:     simd.
// CHECK:         func.return
