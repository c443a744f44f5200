"""The GPU mapping of phases: SIMD lanes are the threads of a block, parallel
loops are the grid, and a depth-first tile is a block (put together by
`backends.nvptx`).

A phase is a device function `void (i64, i64, ptr args)` with the same
parameter blocks as on the CPU (the two i64 parameters are unused), called by
the `.entry` of its launch. A launch is a grid of blocks of `(ntid.x, ntid.y)`
threads, and any grid and block shape is correct:

- *lane mode*: a `simd.loop` runs its points block-strided over `tid.x`
  (`w = lb + tid.x; w < ub; w += ntid.x`), so the masked tail of the CPU
  becomes a per-thread predicate. The flat range of the phase's parallel dims
  (its *rows*) is split into one contiguous chunk per block (`ctaid.x` of
  `nctaid.x`), whose rows the block's row threads (`tid.y`) take in turn:
  rows y, y + ntid.y, ... of the chunk. A thread finds the parallel ivs of its
  first row by division and then steps them like an odometer, adding the
  digits of ntid.y with one carry per dim, so no row costs a division.
- *block mode*, for a `loop.tile` (bs-tile-depth-first) whose scratch buffers
  are `memref.alloca`s of its body and fit in `SHARED_BYTES`: one block runs
  one tile at a time (tiles grid-strided over the blocks). The scratch is a
  static shared-memory array (`addrspace(3)`, one per block), and each nest of
  the tile body runs cooperatively: its points, times the lanes of its
  `simd.loop`, are flattened and strided over all threads of the block
  (odometer stepping, as in lane mode). A barrier (`bar.sync 0`) separates a
  nest from an earlier one of the same tile iteration whose writes it reads or
  whose reads it overwrites (so the producer and the pad strips, which write
  disjoint points of the scratch, share one barrier before the reader), and
  ends every tile iteration (the next tile overwrites the scratch).
- *serial mode*, for the other phases whose lanes exchange data through memory
  (a `loop.tile` that does not fit block mode, a phase with a
  `memref.alloca`, which is private to a thread, or one that reads a buffer it
  writes) and for scalar phases (no `simd.loop`): every thread of a block is a
  row thread and runs the lanes of its `simd.loop`s one after the other. (A
  tile too large for shared memory is first cut to one point of its tiled dims
  where its scratch is sized by its steps, bs-gpu-unit-tiles; it is then a
  block if it fits.)

A phase without parallel dims runs on row thread 0 of block 0 (block 0 in
block mode). Consecutive phases that are independent share one launch, in
which `ctaid.y` picks the phase; a block-mode phase has a launch of its own.
Every SIMD value is a scalar of its lane: a contiguous, strided or gathered
`simd.load` is one scalar load at the thread's point, a padded one clamps its
address and selects the pad value, and `simd.splat` is the value itself.
Phases never synchronize with each other: the runtime runs them as separate
launches on one stream.

- `nvvm`: the names the backend, the emitter and the CUDA emulator agree on;
- `analysis`: which mode a phase runs in, and its block's shared memory;
- `unit_tiles`: bs-gpu-unit-tiles, tiles too large for shared memory cut to
  one point;
- `emitter`: `GPUPhaseEmitter`, a phase's thread mapping;
- `lowerings`: `GPU_LOWERINGS`, the simd and math ops on one lane;
- `launches`: the launch groups and the runtime's launch hints.
"""
