// RUN: bs-opt %s -p bs-tile-depth-first | filecheck %s
// RUN: bs-opt %s -p bs-tile-depth-first | filecheck %s --check-prefix=THREE
// RUN: bs-opt %s -p 'bs-tile-depth-first{cache=300}' | filecheck %s --check-prefix=HALO
// RUN: bs-opt %s -p 'bs-tile-depth-first{cache=5000}' | filecheck %s --check-prefix=CAT

// bs-tile-depth-first wraps a producer nest and the adjacent nests that read
// its scratch buffer (a memref.alloc) in one loop.tile over the leading dims
// that every access of the buffer indexes directly or through a window. Each
// tile writes its block (with a halo along windowed dims) into a tile-sized
// memref.alloca and reads it back while it is in cache; the full-size buffer
// disappears. Tile sizes follow the machine's L2 size; with these small shapes
// one (n) slice of all 37 channels always fits, so the CHECK lines hold on any
// machine. The HALO lines set the budget with the pass's `cache` option.

// max_pool -> avg_pool (NCHW), as bs-fuse leaves it.
func.func @pool_pool(%x: memref<?x37x13x13xf32>, %out: memref<?x37x3x3xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  %m = memref.alloc(%batch) : memref<?x37x7x7xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
    %mx = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xFF800000 : f32 -> f32 {
      %e = loop.load %x[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4 - 1, d3 * 2 + d5 - 1)> pad 0xFF800000 : f32 : memref<?x37x13x13xf32>
      loop.yield %e : f32
    }
    loop.store %mx, %m[%n, %c, %h, %w] : f32, memref<?x37x7x7xf32>
  }
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 3, 3) {
    %s = loop.reduce add (%kh, %kw) = (0, 0) to (3, 3) init 0.0 : f32 -> f32 {
      %e = loop.load %m[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4, d3 * 2 + d5)> : memref<?x37x7x7xf32>
      loop.yield %e : f32
    }
    %nine = arith.constant 9.0 : f32
    %avg = arith.divf %s, %nine : f32
    loop.store %avg, %out[%n, %c, %h, %w] : f32, memref<?x37x3x3xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @pool_pool
// CHECK-NEXT:    %c0 = arith.constant 0 : index
// CHECK-NEXT:    %batch = memref.dim %x, %c0
// CHECK-NOT:     memref.alloc(
//   n is tiled; c, h and w fit whole, so they keep static bounds
// CHECK-NEXT:    loop.tile (%[[TN:.+]]) = (0) to (%batch) step (1) {
// CHECK-NEXT:      %[[S:.+]] = memref.alloca() : memref<1x37x7x7xf32>
//   the tile's block ends at min(iv + step, upper bound)
// CHECK-NEXT:      %[[ONE:.+]] = arith.constant 1 : index
// CHECK-NEXT:      %[[NE:.+]] = arith.addi %[[TN]], %[[ONE]] : index
// CHECK-NEXT:      %[[NUB:.+]] = arith.minsi %[[NE]], %batch : index
// CHECK-NEXT:      loop.nest (%n, %c, %h, %w) = (%[[TN]], 0, 0, 0) to (%[[NUB]], 37, 7, 7) {
// CHECK-NEXT:        %mx = loop.reduce max
// CHECK-NEXT:          loop.load %x[%n, %c, %h, %w, %kh, %kw]
// CHECK-NEXT:          loop.yield
// CHECK-NEXT:        }
// CHECK-NEXT:        loop.store %mx, %[[S]][%n, %c, %h, %w, %[[TN]]] map affine_map<(d0, d1, d2, d3, d4) -> ((d0 + (d4 * -1)), d1, d2, d3)> : f32, memref<1x37x7x7xf32>
// CHECK-NEXT:      }
// CHECK-NEXT:      loop.nest (%[[N:.+]], %[[C:.+]], %[[H:.+]], %[[W:.+]]) = (%[[TN]], 0, 0, 0) to (%[[NUB]], 37, 3, 3) {
// CHECK-NEXT:        %s = loop.reduce add (%[[KH:.+]], %[[KW:.+]]) = (0, 0) to (3, 3)
// CHECK-NEXT:          loop.load %[[S]][%[[N]], %[[C]], %[[H]], %[[W]], %[[KH]], %[[KW]], %[[TN]]] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> ((d0 + (d6 * -1)), d1, ((d2 * 2) + d4), ((d3 * 2) + d5))> : memref<1x37x7x7xf32>
// CHECK-NEXT:          loop.yield
// CHECK-NEXT:        }
// CHECK-NEXT:        %nine = arith.constant
// CHECK-NEXT:        %avg = arith.divf %s, %nine
// CHECK-NEXT:        loop.store %avg, %out[%[[N]], %[[C]], %[[H]], %[[W]]] : f32, memref<?x37x3x3xf32>
// CHECK-NEXT:      }
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return

// BN+ReLU -> max_pool 3x3/2 pad 1 (NCHW), as bs-fuse leaves it, with a cache
// budget of 300 bytes (HALO lines) so that h is tiled two output rows at a
// time. The pool of the tile's output rows [t, t_end) reads input rows
// [2t - 1, 2 t_end), a halo of one row shared with the next tile, and columns
// [-1, 14). The scratch holds all of it: the producer computes the part inside
// the buffer, and strips of -inf fill the pool's padding around it, so the pool
// reads the scratch without bounds checks.
func.func @bn_relu_pool(%x: memref<?x37x13x13xf32>, %alpha: memref<37xf32>, %out: memref<?x37x7x7xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  %r = memref.alloc(%batch) : memref<?x37x13x13xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 13, 13) {
    %v = loop.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
    %a = loop.load %alpha[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d1)> : memref<37xf32>
    %m = arith.mulf %v, %a : f32
    %z = arith.constant 0.0 : f32
    %y = arith.maximumf %m, %z : f32
    loop.store %y, %r[%n, %c, %h, %w] : f32, memref<?x37x13x13xf32>
  }
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
    %mx = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xFF800000 : f32 -> f32 {
      %e = loop.load %r[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4 - 1, d3 * 2 + d5 - 1)> pad 0xFF800000 : f32 : memref<?x37x13x13xf32>
      loop.yield %e : f32
    }
    loop.store %mx, %out[%n, %c, %h, %w] : f32, memref<?x37x7x7xf32>
  }
  func.return
}

// HALO-LABEL: func.func @bn_relu_pool
// HALO-NOT:     memref.alloc(
// HALO:         loop.tile (%[[TN:.+]], %[[TC:.+]], %[[TH:.+]]) = (0, 0, 0) to (%batch, 37, 7) step (1, 1, 2) {
//   5 rows: two output rows of a 3-row window at stride 2; 15 columns: 13 and the padding
// HALO-NEXT:      %[[S:.+]] = memref.alloca() : memref<1x1x5x15xf32>
// HALO:           %[[HE:.+]] = arith.addi %[[TH]], %{{.+}} : index
// HALO-NEXT:      %[[C7:.+]] = arith.constant 7 : index
// HALO-NEXT:      %[[HUB:.+]] = arith.minsi %[[HE]], %[[C7]] : index
//   the rows the pool reads: from 2 t - 1 to 2 t_end (2 (t_end - 1) + 1 + 1) ...
// HALO-NEXT:      %[[TWO:.+]] = arith.constant 2 : index
// HALO-NEXT:      %[[T2:.+]] = arith.muli %[[TH]], %[[TWO]] : index
// HALO-NEXT:      %[[M1:.+]] = arith.constant -1 : index
// HALO-NEXT:      %[[PLO:.+]] = arith.addi %[[T2]], %[[M1]] : index
// HALO-NEXT:      %[[TWO2:.+]] = arith.constant 2 : index
// HALO-NEXT:      %[[PHI:.+]] = arith.muli %[[HUB]], %[[TWO2]] : index
//   ... of which the producer computes those inside the buffer
// HALO-NEXT:      %[[ZERO:.+]] = arith.constant 0 : index
// HALO-NEXT:      %[[ILO:.+]] = arith.maxsi %[[PLO]], %[[ZERO]] : index
// HALO-NEXT:      %[[C13:.+]] = arith.constant 13 : index
// HALO-NEXT:      %[[IHI:.+]] = arith.minsi %[[PHI]], %[[C13]] : index
// HALO-NEXT:      loop.nest (%n, %c, %h, %w) = (%[[TN]], %[[TC]], %[[ILO]], 0) to (%{{.+}}, %{{.+}}, %[[IHI]], 13) {
// HALO-NEXT:        %v = loop.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
// HALO:             %y = arith.maximumf %m, %z : f32
// HALO-NEXT:        loop.store %y, %[[S]][%n, %c, %h, %w, %[[TN]], %[[TC]], %[[TH]]] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> ((d0 + (d4 * -1)), (d1 + (d5 * -1)), ((d2 + (d6 * -2)) + 1), (d3 + 1))>
// HALO-NEXT:      }
//   -inf above and below the buffer (all columns), then left and right of it
// HALO-NEXT:      loop.nest (%{{.+}}) = (%[[TN]], %[[TC]], %[[PLO]], -1) to (%{{.+}}, %{{.+}}, %[[ILO]], 14) {
// HALO-NEXT:        %[[NINF:.+]] = arith.constant 0xff800000 : f32
// HALO-NEXT:        loop.store %[[NINF]], %[[S]]
// HALO-NEXT:      }
// HALO-NEXT:      loop.nest (%{{.+}}) = (%[[TN]], %[[TC]], %[[IHI]], -1) to (%{{.+}}, %{{.+}}, %[[PHI]], 14) {
// HALO:           loop.nest (%{{.+}}) = (%[[TN]], %[[TC]], %[[ILO]], -1) to (%{{.+}}, %{{.+}}, %[[IHI]], 0) {
// HALO:           loop.nest (%{{.+}}) = (%[[TN]], %[[TC]], %[[ILO]], 13) to (%{{.+}}, %{{.+}}, %[[IHI]], 14) {
// HALO:           loop.nest (%{{.+}}) = (%[[TN]], %[[TC]], %[[TH]], 0) to (%{{.+}}, %{{.+}}, %[[HUB]], 7) {
// HALO-NEXT:        %mx = loop.reduce max
//   no pad: the scratch holds it
// HALO-NEXT:          loop.load %[[S]][{{.+}}] map affine_map<(d0, d1, d2, d3, d4, d5, d6, d7, d8) -> ((d0 + (d6 * -1)), (d1 + (d7 * -1)), (((((d2 * 2) + d4) + -1) + (d8 * -2)) + 1), ((d3 * 2) + d5))> : memref<1x1x5x15xf32>

// Independent ops between the producer and its reader (the BN factors of the
// next layer, as in DenseNet's first stack) move above the producer, so the
// chain is adjacent and tiles.
func.func @hoist(%x: memref<?x37x13x13xf32>, %g: memref<37xf32>, %out: memref<?x37x7x7xf32>, %f_out: memref<37xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  %r = memref.alloc(%batch) : memref<?x37x13x13xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 13, 13) {
    %v = loop.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
    %y = math.exp %v : f32
    loop.store %y, %r[%n, %c, %h, %w] : f32, memref<?x37x13x13xf32>
  }
  %f = memref.alloc() : memref<37xf32>
  loop.nest (%i) = (0) to (37) {
    %gv = loop.load %g[%i] : memref<37xf32>
    %s = math.sqrt %gv : f32
    loop.store %s, %f[%i] : f32, memref<37xf32>
  }
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
    %mx = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xFF800000 : f32 -> f32 {
      %e = loop.load %r[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4 - 1, d3 * 2 + d5 - 1)> pad 0xFF800000 : f32 : memref<?x37x13x13xf32>
      loop.yield %e : f32
    }
    loop.store %mx, %out[%n, %c, %h, %w] : f32, memref<?x37x7x7xf32>
  }
  loop.nest (%i) = (0) to (37) {
    %fv = loop.load %f[%i] : memref<37xf32>
    loop.store %fv, %f_out[%i] : f32, memref<37xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @hoist
// CHECK-NOT:     memref.alloc(%batch)
// CHECK:         %f = memref.alloc() : memref<37xf32>
// CHECK-NEXT:    loop.nest (%i) = (0) to (37) {
// CHECK:         loop.tile
// CHECK:           math.exp
// CHECK:           loop.reduce max
// CHECK:         loop.nest (%{{.+}}) = (0) to (37) {
// CHECK-NEXT:      loop.load %f

// Fallback: an op the pass can't move (here a memref.dim) separates the
// producer from its reader, so there is no tile; rather than stream the
// full-size buffer through memory, the producer is inlined into the windows
// (what bs-fuse{overlap=inline} does).
func.func @untiled_window(%x: memref<?x37x13x13xf32>, %out: memref<?x37x7x7xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  %r = memref.alloc(%batch) : memref<?x37x13x13xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 13, 13) {
    %v = loop.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
    %y = math.exp %v : f32
    loop.store %y, %r[%n, %c, %h, %w] : f32, memref<?x37x13x13xf32>
  }
  %c1 = arith.constant 1 : index
  %d1 = memref.dim %x, %c1 : memref<?x37x13x13xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
    %mx = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xFF800000 : f32 -> f32 {
      %e = loop.load %r[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4 - 1, d3 * 2 + d5 - 1)> pad 0xFF800000 : f32 : memref<?x37x13x13xf32>
      loop.yield %e : f32
    }
    loop.store %mx, %out[%n, %c, %h, %w] : f32, memref<?x37x7x7xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @untiled_window
// CHECK-NOT:     loop.tile
// CHECK-NOT:     memref.alloc
// CHECK:         loop.nest (%{{.+}}) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
// CHECK-NEXT:      %mx = loop.reduce max
// CHECK-NEXT:        loop.load %x[{{.+}}] map affine_map<{{.+}}> pad 0.000000e+00
// CHECK-NEXT:        math.exp
// CHECK-NEXT:        loop.in_bounds
// CHECK:             arith.select

// Left alone: a single nest.
func.func @single(%x: memref<?x37x13x13xf32>, %out: memref<?x37x13x13xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 13, 13) {
    %v = loop.load %x[%n, %c, %h, %w] : memref<?x37x13x13xf32>
    loop.store %v, %out[%n, %c, %h, %w] : f32, memref<?x37x13x13xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @single
// CHECK-NOT:     loop.tile
// CHECK:         loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 13, 13) {
// CHECK-NEXT:      loop.load %x
// CHECK-NEXT:      loop.store
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return

// Left alone: the intermediate is a kernel output, which must be written in
// full.
func.func @to_output(%x: memref<?x37x13x13xf32>, %o1: memref<?x37x7x7xf32>, %o2: memref<?x37x3x3xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
    %mx = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xFF800000 : f32 -> f32 {
      %e = loop.load %x[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4 - 1, d3 * 2 + d5 - 1)> pad 0xFF800000 : f32 : memref<?x37x13x13xf32>
      loop.yield %e : f32
    }
    loop.store %mx, %o1[%n, %c, %h, %w] : f32, memref<?x37x7x7xf32>
  }
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 3, 3) {
    %s = loop.reduce add (%kh, %kw) = (0, 0) to (3, 3) init 0.0 : f32 -> f32 {
      %e = loop.load %o1[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4, d3 * 2 + d5)> : memref<?x37x7x7xf32>
      loop.yield %e : f32
    }
    loop.store %s, %o2[%n, %c, %h, %w] : f32, memref<?x37x3x3xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @to_output
// CHECK-NOT:     loop.tile
// CHECK:         loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 7)
// CHECK:         loop.nest (%{{.+}}) = (0, 0, 0, 0) to (%batch, 37, 3, 3)
// CHECK:         func.return

// A consumer that reads across channels (a channel flip) can't be tiled over
// C: only n is tiled, and the scratch keeps all 37 channels.
func.func @flip_c(%x: memref<?x37x13x13xf32>, %out: memref<?x37x7x7xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x13x13xf32>
  %m = memref.alloc(%batch) : memref<?x37x7x7xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
    %mx = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xFF800000 : f32 -> f32 {
      %e = loop.load %x[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4 - 1, d3 * 2 + d5 - 1)> pad 0xFF800000 : f32 : memref<?x37x13x13xf32>
      loop.yield %e : f32
    }
    loop.store %mx, %m[%n, %c, %h, %w] : f32, memref<?x37x7x7xf32>
  }
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
    %v = loop.load %m[%n, %c, %h, %w] map affine_map<(d0, d1, d2, d3) -> (d0, 36 - d1, d2, d3)> : memref<?x37x7x7xf32>
    loop.store %v, %out[%n, %c, %h, %w] : f32, memref<?x37x7x7xf32>
  }
  func.return
}

// CHECK-LABEL: func.func @flip_c
// CHECK:         loop.tile (%[[TN:.+]]) = (0) to (%batch) step (1) {
// CHECK-NEXT:      %[[S:.+]] = memref.alloca() : memref<1x37x7x7xf32>
// CHECK:           loop.nest (%{{.+}}) = (%[[TN]], 0, 0, 0) to (%{{.+}}, 37, 7, 7)
// CHECK:           loop.nest (%{{.+}}) = (%[[TN]], 0, 0, 0) to (%{{.+}}, 37, 7, 7)
// CHECK-NEXT:        loop.load %[[S]][{{.*}}] map affine_map<(d0, d1, d2, d3, d4) -> ((d0 + (d4 * -1)), ((d1 * -1) + 36), d2, d3)>

// A chain of three windowed layers (max_pool -> avg_pool -> max_pool), as
// bs-lower-nn-to-loop + bs-fuse leave it, with each scratch buffer allocated
// right before its producer (THREE lines). TileChain tiles the first two
// nests over n (their windowed dims fit whole); the third reads %b along n
// directly, so JoinTile adds it to that tile on the tile's block, and %b
// becomes a tile-sized alloca too: all three nests in one loop.tile, no
// full-size buffer left (DESIGN.md: one tile's working set of every layer of
// the stack).
func.func @three(%x: memref<?x37x29x29xf32>, %out: memref<?x37x3x3xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x37x29x29xf32>
  %a = memref.alloc(%batch) : memref<?x37x15x15xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 15, 15) {
    %mx = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xFF800000 : f32 -> f32 {
      %e = loop.load %x[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4 - 1, d3 * 2 + d5 - 1)> pad 0xFF800000 : f32 : memref<?x37x29x29xf32>
      loop.yield %e : f32
    }
    loop.store %mx, %a[%n, %c, %h, %w] : f32, memref<?x37x15x15xf32>
  }
  %b = memref.alloc(%batch) : memref<?x37x7x7xf32>
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 7, 7) {
    %s = loop.reduce add (%kh, %kw) = (0, 0) to (3, 3) init 0.0 : f32 -> f32 {
      %e = loop.load %a[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4, d3 * 2 + d5)> : memref<?x37x15x15xf32>
      loop.yield %e : f32
    }
    %nine = arith.constant 9.0 : f32
    %avg = arith.divf %s, %nine : f32
    loop.store %avg, %b[%n, %c, %h, %w] : f32, memref<?x37x7x7xf32>
  }
  loop.nest (%n, %c, %h, %w) = (0, 0, 0, 0) to (%batch, 37, 3, 3) {
    %mx = loop.reduce max (%kh, %kw) = (0, 0) to (3, 3) init 0xFF800000 : f32 -> f32 {
      %e = loop.load %b[%n, %c, %h, %w, %kh, %kw] map affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 * 2 + d4, d3 * 2 + d5)> : memref<?x37x7x7xf32>
      loop.yield %e : f32
    }
    loop.store %mx, %out[%n, %c, %h, %w] : f32, memref<?x37x3x3xf32>
  }
  func.return
}

// THREE-LABEL: func.func @three
// THREE-NOT:     loop.nest
// THREE-NOT:     memref.alloc(
// THREE:         loop.tile
// THREE-NOT:     memref.alloc(
// THREE:         loop.nest {{.*}} 15, 15) {
// THREE-NOT:     memref.alloc(
// THREE:         loop.nest {{.*}} 7, 7) {
// THREE-NOT:     memref.alloc(
// THREE:         loop.nest {{.*}} 3, 3) {
// THREE-NOT:     memref.alloc(
// THREE:         func.return

// A `cat`'s consumer split into parts (bs-fuse's SplitCatConsumer: DenseNet's
// BN-ReLU of the pieces, each part its own channels) writes a scratch buffer
// that a 1x1 convolution reads: the parts are the producers, each running on
// the tile's block in its own channels of the scratch before the reader. A
// row of all three buffers' channels is 2080 bytes: tiles of 2 rows (CAT).
func.func @cat_parts(%x: memref<?x6x5x32xf32>, %y: memref<?x6x5x16xf32>, %wt: memref<1x1x48x8xf32>, %out: memref<?x6x5x8xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x6x5x32xf32>
  %s = memref.alloc(%batch) : memref<?x6x5x48xf32>
  loop.nest (%n, %h, %w, %c) = (0, 0, 0, 0) to (%batch, 6, 5, 32) {
    %e = loop.load %x[%n, %h, %w, %c] : memref<?x6x5x32xf32>
    %r = arith.maximumf %e, %e : f32
    loop.store %r, %s[%n, %h, %w, %c] : f32, memref<?x6x5x48xf32>
  }
  loop.nest (%n, %h, %w, %c) = (0, 0, 0, 32) to (%batch, 6, 5, 48) {
    %e = loop.load %y[%n, %h, %w, %c] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3 - 32)> : memref<?x6x5x16xf32>
    %r = arith.maximumf %e, %e : f32
    loop.store %r, %s[%n, %h, %w, %c] : f32, memref<?x6x5x48xf32>
  }
  loop.nest (%n, %h, %w, %o) = (0, 0, 0, 0) to (%batch, 6, 5, 8) {
    %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 48) init 0.0 : f32 -> f32 {
      %xv = loop.load %s[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4, d2 + d5, d6)> : memref<?x6x5x48xf32>
      %wv = loop.load %wt[%kh, %kw, %ci, %o] : memref<1x1x48x8xf32>
      %m = arith.mulf %xv, %wv : f32
      loop.yield %m : f32
    }
    loop.store %acc, %out[%n, %h, %w, %o] : f32, memref<?x6x5x8xf32>
  }
  func.return
}

// CAT-LABEL: func.func @cat_parts
// CAT-NOT:     memref.alloc(
// CAT:         loop.tile (%[[N:.+]], %[[H:.+]]) = (0, 0) to (%batch, 6) step (1, 2) {
// CAT-NEXT:      %[[S:.+]] = memref.alloca() : memref<1x2x5x48xf32>
// CAT:           loop.nest (%n, %h, %w, %c) = (%[[N]], %[[H]], 0, 0) to (%{{.+}}, %[[HE:.+]], 5, 32) {
// CAT:             loop.store %r, %[[S]][%n, %h, %w, %c, %[[N]], %[[H]]]
// CAT:           loop.nest (%{{.+}}) = (%[[N]], %[[H]], 0, 32) to (%{{.+}}, %[[HE]], 5, 48) {
// CAT:             loop.load %y
// CAT:             loop.store %{{.+}}, %[[S]]
// CAT:           loop.nest (%{{.+}}) = (%[[N]], %[[H]], 0, 0) to (%{{.+}}, %[[HE]], 5, 8) {
// CAT:             loop.reduce add contract
// CAT-NEXT:          loop.load %[[S]]
// CAT:           loop.store %acc, %out
// CAT-NEXT:    }
// CAT-NEXT:  }
