// RUN: bs-opt %s -p bs-form-stacks,bs-lower-nn-to-loop,bs-fuse | filecheck %s

// `qkv[:, :, 1].transpose(1, 2)` copied dense: a crop to one point of dim 2,
// a reshape that drops that dim, and a permute. The reshape's nest stores
// `d3 + d2 * 7` where d2 is the one point; bs-fuse drops that dim, so the
// store names each iv once and the crop and reshape inline into the permute:
// one nest reading the part of %x it needs, no copy between.
func.func @select(%x: tensor<?x5x3x7xf32>) -> tensor<?x7x5xf32> {
  %c = nn.pad %x {low = array<i64: 0, 0, -1, 0>, high = array<i64: 0, 0, -1, 0>, value = 0.0 : f64} : tensor<?x5x3x7xf32> -> tensor<?x5x1x7xf32>
  %s = nn.reshape %c : tensor<?x5x1x7xf32> -> tensor<?x5x7xf32>
  %p = nn.permute %s {dims = array<i64: 0, 2, 1>} : tensor<?x5x7xf32> -> tensor<?x7x5xf32>
  func.return %p : tensor<?x7x5xf32>
}

// CHECK-LABEL: func.func @stack0(
// CHECK-NOT:     memref.alloc
// CHECK:         loop.nest (%{{.+}}, %{{.+}}, %{{.+}}) = (0, 0, 0) to (%batch, 7, 5) {
// CHECK-NEXT:      %[[V:.+]] = loop.load %x[{{.*}}] map affine_map<(d0, d1, d2) -> (d0, d2, 1, d1)> : memref<?x5x3x7xf32>
// CHECK-NEXT:      loop.store %[[V]], %out[{{.*}}] : f32, memref<?x7x5xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return
