// RUN: bs-opt %s -p bs-parallelize | filecheck %s

// bs-parallelize marks every top-level loop.nest or loop.tile of a kernel
// with `parallel N`, N = all of its dims (the runtime collapses them and
// splits the range across threads; the lane dim already lives in a
// simd.loop). Nests inside a tile run on the tile's thread and stay unmarked.

// A vectorized nest and a scalar (gather) nest at top level.
func.func @top(%x: memref<?x37x13x13xf32>, %out: memref<?x37x13x13xf32>, %p: memref<29x74xf32>, %q: memref<29x37xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  loop.nest (%n, %c, %h) = (0, 0, 0) to (%batch, 37, 13) {
    simd.loop (%w) = (0) to (13) {
      %v = simd.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
      simd.store %v, %out[%n, %c, %h, %w] : memref<?x37x13x13xf32>
    }
  }
  loop.nest (%i, %j) = (0, 0) to (29, 37) attributes {bs.scalar = "loop.load indexes with a computed lane-varying value"} {
    %two = arith.constant 2 : index
    %j2 = arith.muli %j, %two : index
    %v = loop.load %p[%i, %j2] : memref<29x74xf32>
    loop.store %v, %q[%i, %j] : f32, memref<29x37xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @top
// CHECK:         loop.nest parallel 3 (%n, %c, %h) = (0, 0, 0) to (%batch, 37, 13) {
// CHECK-NEXT:      simd.loop (%w) = (0) to (13) {
// CHECK:         loop.nest parallel 2 (%i, %j) = (0, 0) to (29, 37) attributes {bs.scalar = "loop.load indexes with a computed lane-varying value"} {

// A depth-first tile: the tile is parallel over its 2 dims, the nests in it
// are not.
func.func @tiled(%x: memref<?x37x13x13xf32>, %out: memref<?x37x13x13xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  loop.tile (%tn, %tc) = (0, 0) to (%batch, 37) step (1, 37) {
    %s = memref.alloca() : memref<1x37x13x13xf32>
    %c1 = arith.constant 1 : index
    %ne = arith.addi %tn, %c1 : index
    %c37 = arith.constant 37 : index
    %ce = arith.addi %tc, %c37 : index
    loop.nest (%n, %c, %h, %w) = (%tn, %tc, 0, 0) to (%ne, %ce, 13, 13) {
      %v = loop.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
      loop.store %v, %s[%n, %c, %h, %w, %tn, %tc] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0 - d4, d1 - d5, d2, d3)> : f32, memref<1x37x13x13xf32>
    }
    loop.nest (%n, %c, %h) = (%tn, %tc, 0) to (%ne, %ce, 13) {
      simd.loop (%w) = (0) to (13) {
        %v = simd.load %s[%n, %c, %h, %w, %tn, %tc] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0 - d4, d1 - d5, d2, d3)> : memref<1x37x13x13xf32>
        simd.store %v, %out[%n, %c, %h, %w] : memref<?x37x13x13xf32>
      }
    }
  }
  func.return
}

// CHECK-LABEL: func.func @tiled
// CHECK:         loop.tile parallel 2 (%tn, %tc) = (0, 0) to (%batch, 37) step (1, 37) {
// CHECK-NOT:       parallel
// CHECK:           loop.nest (%n, %c, %h, %w) = (%tn, %tc, 0, 0)
// CHECK-NOT:       parallel
// CHECK:           loop.nest (%{{.+}}, %{{.+}}, %{{.+}}) = (%tn, %tc, 0)
// CHECK-NOT:       parallel
// CHECK:         func.return

// Left alone: a nest without dims (a vectorized 1-D nest: all its work is in
// the lane loop), a nest that already says how many dims are parallel, and
// nests outside a bs.kernel function.
func.func @left_alone(%p: memref<37xf32>, %q: memref<29x37xf32>) attributes {bs.kernel} {
  loop.nest () = () to () {
    simd.loop (%i) = (0) to (37) {
      %v = simd.load %p[%i] : memref<37xf32>
      simd.store %v, %p[%i] : memref<37xf32>
    }
  }
  loop.nest parallel 1 (%a, %b) = (0, 0) to (29, 37) {
    %v = loop.load %q[%a, %b] : memref<29x37xf32>
    loop.store %v, %q[%a, %b] : f32, memref<29x37xf32>
  }
  func.return
}

func.func @not_kernel(%q: memref<29x37xf32>) {
  loop.nest (%i, %j) = (0, 0) to (29, 37) {
    %v = loop.load %q[%i, %j] : memref<29x37xf32>
    loop.store %v, %q[%i, %j] : f32, memref<29x37xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @left_alone
// CHECK-NEXT:    loop.nest () = () to () {
// CHECK-NEXT:      simd.loop
// CHECK:         loop.nest parallel 1 (%a, %b) = (0, 0) to (29, 37) {
// CHECK-LABEL: func.func @not_kernel
// CHECK-NEXT:    loop.nest (%i, %j) = (0, 0) to (29, 37) {
