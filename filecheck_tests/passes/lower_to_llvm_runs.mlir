// RUN: bs-opt %s -p 'bs-lower-to-llvm{target=x86-64 cpu=skylake-avx512}' | filecheck %s

// Rolled runs: the pieces of a merged cat after the first are the same code up
// to their buffer and channel offsets, so they are lowered once, as a loop
// over a table in the phase's parameter block (one row per piece). The piece
// count is not in the phase's key: a cat of three pieces shares the function
// of a cat of four.

// CHECK:       llvm.func @cat4_p0(%{{.*}}: i64, %{{.*}}: i64, %[[ARGS:.*]]: !llvm.ptr)
// The run's header follows the 4 buffer references and 3 parameters: the
// row count at slot 7, where the table starts at slot 8.
// CHECK:         %[[C7:.*]] = llvm.mlir.constant(7) : i64
// CHECK-NEXT:    %[[H7:.*]] = llvm.getelementptr inbounds %[[ARGS]][%[[C7]]]
// CHECK-NEXT:    %[[COUNT:.*]] = llvm.load %[[H7]] {alignment = 8 : i64} : !llvm.ptr -> i64
// CHECK-NEXT:    %[[C8:.*]] = llvm.mlir.constant(8) : i64
// CHECK-NEXT:    %[[H8:.*]] = llvm.getelementptr inbounds %[[ARGS]][%[[C8]]]
// CHECK-NEXT:    %[[TABLE:.*]] = llvm.load %[[H8]] {alignment = 8 : i64} : !llvm.ptr -> i64
// CHECK:         llvm.icmp "slt" %[[ROW:.*]], %[[COUNT]] : i64
// A row is 5 slots: the piece's pointer and batch references, then its lower
// and upper bound and its map offset.
// CHECK:         %[[AT:.*]] = llvm.mul %[[ROW]], %{{.*}} : i64
// CHECK:         %[[SLOT:.*]] = llvm.add %[[TABLE]], %[[AT]] : i64
// CHECK:         %[[ROWPTR:.*]] = llvm.getelementptr inbounds %[[ARGS]][%[[SLOT]]]
// CHECK:         %[[REF:.*]] = llvm.load %[[ROWPTR]] {alignment = 8 : i64} : !llvm.ptr -> i64
// CHECK:         %[[PP:.*]] = llvm.getelementptr inbounds %[[ARGS]][%[[REF]]]
// CHECK:         %[[PIECE:.*]] = llvm.load %[[PP]] {alignment = 8 : i64} : !llvm.ptr -> !llvm.ptr
// The template's one lane loop, reading the row's piece.
// CHECK:         llvm.getelementptr inbounds %[[PIECE]][%{{.*}}] : (!llvm.ptr, i64) -> !llvm.ptr, f32
// CHECK:         llvm.load %{{.*}} {alignment = 4 : i64} : !llvm.ptr -> vector<16xf32>
// CHECK-NOT:   llvm.func @cat3_p0
// Slots of @cat4: 10 buffer slots; the phase's block at 10: references to %a
// and %y, parameters 3, 16 and 64, the header (3 rows, table at block slot 9),
// then a row for each of %b, %c and %d.
// CHECK:       loop.kernel_info
// CHECK-SAME:    kernel = "cat4", phases = ["cat4_p0"]
// CHECK-SAME:    slots = array<i64: 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -10, -9, -2, -1, 3, 16, 64, 3, 9, -8, -7, 16, 32, -16, -6, -5, 32, 48, -32, -4, -3, 48, 64, -48>
// CHECK:       loop.kernel_info
// CHECK-SAME:    kernel = "cat3", phases = ["cat4_p0"]
// CHECK-SAME:    slots = array<i64: 0, 0, 0, 0, 0, 0, 0, 0, -8, -7, -2, -1, 5, 16, 48, 2, 9, -6, -5, 16, 32, -16, -4, -3, 32, 48, -32>
func.func @cat4(%a: memref<?x3x16xf32>, %b: memref<?x3x16xf32>, %c: memref<?x3x16xf32>, %d: memref<?x3x16xf32>, %y: memref<?x3x64xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %a, %c0 : memref<?x3x16xf32>
  loop.nest parallel 2 (%i, %h) = (0, 0) to (%n, 3) {
    simd.loop (%w) = (0) to (16) {
      %v = simd.load %a[%i, %h, %w] : memref<?x3x16xf32>
      simd.store %v, %y[%i, %h, %w] : memref<?x3x64xf32>
    }
    simd.loop (%w) = (16) to (32) {
      %v = simd.load %b[%i, %h, %w] map affine_map<(d0, d1, d2) -> (d0, d1, d2 - 16)> : memref<?x3x16xf32>
      simd.store %v, %y[%i, %h, %w] : memref<?x3x64xf32>
    }
    simd.loop (%w) = (32) to (48) {
      %v = simd.load %c[%i, %h, %w] map affine_map<(d0, d1, d2) -> (d0, d1, d2 - 32)> : memref<?x3x16xf32>
      simd.store %v, %y[%i, %h, %w] : memref<?x3x64xf32>
    }
    simd.loop (%w) = (48) to (64) {
      %v = simd.load %d[%i, %h, %w] map affine_map<(d0, d1, d2) -> (d0, d1, d2 - 48)> : memref<?x3x16xf32>
      simd.store %v, %y[%i, %h, %w] : memref<?x3x64xf32>
    }
  }
  func.return
}
func.func @cat3(%a: memref<?x5x16xf32>, %b: memref<?x5x16xf32>, %c: memref<?x5x16xf32>, %y: memref<?x5x48xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %n = memref.dim %a, %c0 : memref<?x5x16xf32>
  loop.nest parallel 2 (%i, %h) = (0, 0) to (%n, 5) {
    simd.loop (%w) = (0) to (16) {
      %v = simd.load %a[%i, %h, %w] : memref<?x5x16xf32>
      simd.store %v, %y[%i, %h, %w] : memref<?x5x48xf32>
    }
    simd.loop (%w) = (16) to (32) {
      %v = simd.load %b[%i, %h, %w] map affine_map<(d0, d1, d2) -> (d0, d1, d2 - 16)> : memref<?x5x16xf32>
      simd.store %v, %y[%i, %h, %w] : memref<?x5x48xf32>
    }
    simd.loop (%w) = (32) to (48) {
      %v = simd.load %c[%i, %h, %w] map affine_map<(d0, d1, d2) -> (d0, d1, d2 - 32)> : memref<?x5x16xf32>
      simd.store %v, %y[%i, %h, %w] : memref<?x5x48xf32>
    }
  }
  func.return
}
