// RUN: bs-opt %s -p 'bs-lower-nn-to-loop{piece-tables=true}' | filecheck %s
// RUN: bs-opt %s -p bs-lower-nn-to-loop | filecheck %s --check-prefix=OFF

// A run of like stack inputs that a channels-last cat reads (consecutive
// arguments, 16 or a multiple of 16 wide) is one `loop.pieces` buffer: one copy
// nest for the run, whatever its length.
// CHECK-LABEL: func.func @run(
// CHECK:         %[[T:.*]] = loop.pieces %p0, %p1, %p2 : memref<?x5x5x16xf32>, memref<?x5x5x16xf32>, memref<?x5x5x16xf32> -> memref<?x5x5x48xf32>
// CHECK:         loop.nest (%{{.*}}) = (0, 0, 0, 0) to (%batch, 5, 5, 24)
// CHECK:         loop.nest (%{{.*}}) = (0, 0, 0, 0) to (%batch, 5, 5, 48)
// CHECK-NEXT:      loop.load %[[T]]
// CHECK-NEXT:      loop.store %{{.*}} map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, (d3 + 24))>
// CHECK-NOT:     loop.nest (%{{.*}}) = (0, 0, 0, 0) to (%batch, 5, 5, 16)
// OFF-LABEL:   func.func @run(
// OFF-NOT:       loop.pieces
// OFF-COUNT-3:   loop.nest (%{{.*}}) = (0, 0, 0, 0) to (%batch, 5, 5, 16)
func.func @f(%x: tensor<?x5x5x24xf32>, %p0: tensor<?x5x5x16xf32>, %p1: tensor<?x5x5x16xf32>, %p2: tensor<?x5x5x16xf32>) -> tensor<?x5x5x72xf32> {
  %s = nn.stack "run" (%x, %p0, %p1, %p2) : (tensor<?x5x5x24xf32>, tensor<?x5x5x16xf32>, tensor<?x5x5x16xf32>, tensor<?x5x5x16xf32>) -> tensor<?x5x5x72xf32> {
  ^bb0(%a: tensor<?x5x5x24xf32>, %b: tensor<?x5x5x16xf32>, %c: tensor<?x5x5x16xf32>, %d: tensor<?x5x5x16xf32>):
    %cat = nn.cat %a, %b, %c, %d {axis = 3 : i64} : (tensor<?x5x5x24xf32>, tensor<?x5x5x16xf32>, tensor<?x5x5x16xf32>, tensor<?x5x5x16xf32>) -> tensor<?x5x5x72xf32>
    %r = nn.relu %cat : tensor<?x5x5x72xf32> -> tensor<?x5x5x72xf32>
    nn.yield %r : tensor<?x5x5x72xf32>
  }
  func.return %s : tensor<?x5x5x72xf32>
}

// Pieces 8 wide (a lane chunk could straddle two), and a cat along another
// axis, read their inputs one by one.
// (Each kernel follows its graph function, the last stack lowered first.)
// CHECK-LABEL: func.func @rows(
// CHECK-NOT:     loop.pieces
// CHECK-LABEL: func.func @narrow(
// CHECK-NOT:     loop.pieces
// CHECK:         func.return
func.func @g(%p0: tensor<?x5x5x8xf32>, %p1: tensor<?x5x5x8xf32>, %p2: tensor<?x5x5x8xf32>, %q0: tensor<?x4x5x16xf32>, %q1: tensor<?x4x5x16xf32>) -> (tensor<?x5x5x24xf32>, tensor<?x8x5x16xf32>) {
  %s = nn.stack "narrow" (%p0, %p1, %p2) : (tensor<?x5x5x8xf32>, tensor<?x5x5x8xf32>, tensor<?x5x5x8xf32>) -> tensor<?x5x5x24xf32> {
  ^bb0(%b: tensor<?x5x5x8xf32>, %c: tensor<?x5x5x8xf32>, %d: tensor<?x5x5x8xf32>):
    %cat = nn.cat %b, %c, %d {axis = 3 : i64} : (tensor<?x5x5x8xf32>, tensor<?x5x5x8xf32>, tensor<?x5x5x8xf32>) -> tensor<?x5x5x24xf32>
    %r = nn.relu %cat : tensor<?x5x5x24xf32> -> tensor<?x5x5x24xf32>
    nn.yield %r : tensor<?x5x5x24xf32>
  }
  %t = nn.stack "rows" (%q0, %q1) : (tensor<?x4x5x16xf32>, tensor<?x4x5x16xf32>) -> tensor<?x8x5x16xf32> {
  ^bb0(%b: tensor<?x4x5x16xf32>, %c: tensor<?x4x5x16xf32>):
    %cat = nn.cat %b, %c {axis = 1 : i64} : (tensor<?x4x5x16xf32>, tensor<?x4x5x16xf32>) -> tensor<?x8x5x16xf32>
    %r = nn.relu %cat : tensor<?x8x5x16xf32> -> tensor<?x8x5x16xf32>
    nn.yield %r : tensor<?x8x5x16xf32>
  }
  func.return %s, %t : tensor<?x5x5x24xf32>, tensor<?x8x5x16xf32>
}
