// RUN: bs-opt %s -p bs-lower-nn-to-loop | filecheck %s

// A reshape reads its input through one map per group of dims whose extents
// multiply to the same count: a kept dim reads its own iv and a merge an
// affine sum. Where that read would divide (a merge read from the merged
// side), the nest runs over the input instead and stores through the merged
// index, so that both sides stay affine: a channel shuffle stored
// channels-last (split C, permute the two halves, merge) has no division.

func.func @shuffle(%x: tensor<?x5x3x8xf32>) -> tensor<?x5x3x8xf32> {
  %r = nn.stack "k_shuffle" (%x) : (tensor<?x5x3x8xf32>) -> tensor<?x5x3x8xf32> {
  ^bb0(%a: tensor<?x5x3x8xf32>):
    %s = nn.reshape %a : tensor<?x5x3x8xf32> -> tensor<?x5x3x2x4xf32>
    %p = nn.permute %s {dims = array<i64: 0, 1, 2, 4, 3>} : tensor<?x5x3x2x4xf32> -> tensor<?x5x3x4x2xf32>
    %m = nn.reshape %p : tensor<?x5x3x4x2xf32> -> tensor<?x5x3x8xf32>
    nn.yield %m : tensor<?x5x3x8xf32>
  }
  func.return %r : tensor<?x5x3x8xf32>
}

// CHECK-LABEL: func.func @k_shuffle
// CHECK:         loop.nest (%{{.*}}) = (0, 0, 0, 0, 0) to (%{{.*}}, 5, 3, 2, 4) {
// CHECK-NEXT:      loop.load %x[{{.*}}] map affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, (d4 + (d3 * 4)))>
// CHECK:         loop.nest (%{{.*}}) = (0, 0, 0, 0, 0) to (%{{.*}}, 5, 3, 4, 2) {
// CHECK-NEXT:      loop.load %s[{{.*}}] map affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d4, d3)>
// CHECK:         loop.nest (%{{.*}}) = (0, 0, 0, 0, 0) to (%{{.*}}, 5, 3, 4, 2) {
// CHECK-NEXT:      %[[V:.+]] = loop.load %p[{{.*}}] : memref<?x5x3x4x2xf32>
// CHECK-NEXT:      loop.store %[[V]], %out[{{.*}}] map affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, (d4 + (d3 * 2)))>

// A group that is split and merged at once ([6, 4] as [4, 6]) divides
// either way: the nest stays over the output.
func.func @split(%x: tensor<?x6x4xf32>) -> tensor<?x4x6xf32> {
  %r = nn.stack "k_split" (%x) : (tensor<?x6x4xf32>) -> tensor<?x4x6xf32> {
  ^bb0(%a: tensor<?x6x4xf32>):
    %s = nn.reshape %a : tensor<?x6x4xf32> -> tensor<?x4x6xf32>
    nn.yield %s : tensor<?x4x6xf32>
  }
  func.return %r : tensor<?x4x6xf32>
}

// CHECK-LABEL: func.func @k_split
// CHECK:         loop.nest (%{{.*}}) = (0, 0, 0) to (%{{.*}}, 4, 6) {
// CHECK-NEXT:      loop.load %x[{{.*}}] map affine_map<(d0, d1, d2) -> (d0, ((d2 + (d1 * 6)) floordiv 4), ((d2 + (d1 * 6)) mod 4))>
