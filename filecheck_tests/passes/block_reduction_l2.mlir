// RUN: bs-opt %s -p 'bs-register-tile{broadcast-operands=true},bs-block-reduction{cache=16384 l2=49152}' | filecheck %s --check-prefix=FITS
// RUN: bs-opt %s -p 'bs-register-tile{broadcast-operands=true},bs-block-reduction{cache=16384 l2=32768}' | filecheck %s --check-prefix=EXCEEDS

// bs-block-reduction leaves a channel sum whole where all its weights fit
// `l2` bytes (192 channels x 64 lanes x 4 bytes = 48 KiB): it reads them from
// L2 faster than chunks' partial sums cost. Above `l2`, the sum is chunked.
func.func @conv1x1(%x: memref<?x13x13x192xf32>, %wt: memref<1x1x192x64xf32>, %out: memref<?x13x13x64xf32>) attributes {bs.kernel} {
  %c0 = arith.constant 0 : index
  %batch = memref.dim %x, %c0 : memref<?x13x13x192xf32>
  loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 13, 13) {
    simd.loop (%o) = (0) to (64) {
      %acc = loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 192) init 0.0 : f32 -> !simd.vec<f32> {
        %xv = loop.load %x[%n, %h, %w, %o, %kh, %kw, %ci] map affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1 + d4, d2 + d5, d6)> : memref<?x13x13x192xf32>
        %wv = simd.load %wt[%kh, %kw, %ci, %o] map affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)> : memref<1x1x192x64xf32>
        %s = simd.splat %xv : f32
        %m = simd.mulf %s, %wv : !simd.vec<f32>
        loop.yield %m : !simd.vec<f32>
      }
      simd.store %acc, %out[%n, %h, %w, %o] : memref<?x13x13x64xf32>
    }
  }
  func.return
}

// FITS-LABEL: func.func @conv1x1
// FITS:         loop.nest (%n, %h, %w) = (0, 0, 0) to (%batch, 29, 1) attributes {bs.columns = 2 : index} {
// FITS-NOT:     memref.alloca
// FITS:           loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 192)
// FITS-NOT:     loop.nest

// EXCEEDS-LABEL: func.func @conv1x1
// EXCEEDS:         loop.nest (%n, %band) = (0, 0) to (%batch, 8) {
// EXCEEDS-NEXT:      %partial = memref.alloca()
// EXCEEDS:             loop.reduce add contract (%kh, %kw, %ci) = (0, 0, 0) to (1, 1, 64)
