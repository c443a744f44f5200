// RUN: bs-opt %s -p bs-reorder | filecheck %s

// bs-reorder interchanges nest dimensions so that the innermost one indexes the
// contiguous (last) axis of the nest's first store; the others keep their
// order. Loads and stores keep their indices (they name ivs, not positions).

// NHWC, generated in logical (n, c, h, w) order: c moves innermost, the
// bounds move with their ivs, and the attribute dictionary is kept.
func.func @nhwc(%x: memref<?x13x11x37xf32>, %a: memref<37xf32>, %out: memref<?x13x11x37xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x11x37xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 13, 11) attributes {note = "kept"} {
    %v = loop.load %x[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d2, d3, d1)> : memref<?x13x11x37xf32>
    %s = loop.load %a[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d1)> : memref<37xf32>
    %m = arith.mulf %v, %s : f32
    loop.store %m, %out[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d2, d3, d1)> : f32, memref<?x13x11x37xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @nhwc
// CHECK:         loop.nest (%n, %h, %w, %c) = (0, 0, 0, 0) to (%batch, 13, 11, 37) attributes {note = "kept"} {
// CHECK-NEXT:      %v = loop.load %x[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d2, d3, d1)>
// CHECK-NEXT:      %s = loop.load %a[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d1)>
// CHECK-NEXT:      %m = arith.mulf %v, %s
// CHECK-NEXT:      loop.store %m, %out[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d2, d3, d1)>
// CHECK-NEXT:    }

// NHWC pooling: the window reduction moves along with the body.
func.func @nhwc_pool(%x: memref<?x13x11x37xf32>, %out: memref<?x6x5x37xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x11x37xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 6, 5) {
    %mx = loop.reduce max (%kh, %kw) = (0, 0) to (2, 2) init 0xFF800000 : f32 -> f32 {
      %e = loop.load %x[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d2 * 2 + d4, d3 * 2 + d5, d1)> : memref<?x13x11x37xf32>
      loop.yield %e : f32
    }
    loop.store %mx, %out[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, d2, d3, d1)> : f32, memref<?x6x5x37xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @nhwc_pool
// CHECK:         loop.nest (%n, %h, %w, %c) = (0, 0, 0, 0) to (%batch, 6, 5, 37) {
// CHECK-NEXT:      %mx = loop.reduce max (%kh, %kw) = (0, 0) to (2, 2)
// CHECK-NEXT:        loop.load %x[%n, %c, %h, %w, %kh, %kw]
// CHECK-NEXT:        loop.yield
// CHECK-NEXT:      }
// CHECK-NEXT:      loop.store %mx, %out[%n, %c, %h, %w]
// CHECK-NEXT:    }

// A transposing store: its last axis is indexed by i, so i goes innermost.
func.func @transposed(%x: memref<29x37xf32>, %out: memref<37x29xf32>) attributes {bs.kernel} {
  loop.nest (%i, %j) = (0, 0) to (29, 37) {
    %v = loop.load %x[%i, %j] : memref<29x37xf32>
    loop.store %v, %out[%i, %j] map affine_map<(d0, d1) -> (d1, d0)> : f32, memref<37x29xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @transposed
// CHECK-NEXT:    loop.nest (%j, %i) = (0, 0) to (37, 29) {
// CHECK-NEXT:      %v = loop.load %x[%i, %j] : memref<29x37xf32>
// CHECK-NEXT:      loop.store %v, %out[%i, %j] map affine_map<(d0, d1) -> (d1, d0)>
// CHECK-NEXT:    }

// Left alone: NCHW already ends in w.
func.func @nchw(%x: memref<?x37x13x11xf32>, %out: memref<?x37x13x11xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x11xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 13, 11) {
    %v = loop.load %x[%n, %c, %h, %w] : memref<?x37x13x11xf32>
    loop.store %v, %out[%n, %c, %h, %w] : f32, memref<?x37x13x11xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @nchw
// CHECK:         loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 13, 11) {
// CHECK-NEXT:      %v = loop.load %x[%n, %c, %h, %w]
// CHECK-NEXT:      loop.store %v, %out[%n, %c, %h, %w]
// CHECK-NEXT:    }

// Left alone: a 1-D nest, and a nest already marked parallel keeps its mark
// when it is interchanged.
func.func @misc(%x: memref<37xf32>, %y: memref<29x37xf32>, %o: memref<37xf32>, %t: memref<37x29xf32>) attributes {bs.kernel} {
  loop.nest (%i) = (0) to (37) {
    %v = loop.load %x[%i] : memref<37xf32>
    loop.store %v, %o[%i] : f32, memref<37xf32>
  }
  loop.nest parallel 2 (%i, %j) = (0, 0) to (29, 37) {
    %v = loop.load %y[%i, %j] : memref<29x37xf32>
    loop.store %v, %t[%i, %j] map affine_map<(d0, d1) -> (d1, d0)> : f32, memref<37x29xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @misc
// CHECK-NEXT:    loop.nest (%i) = (0) to (37) {
// CHECK:         loop.nest parallel 2 (%[[J:.+]], %[[I:.+]]) = (0, 0) to (37, 29) {
// CHECK-NEXT:      loop.load %y[%[[I]], %[[J]]]
