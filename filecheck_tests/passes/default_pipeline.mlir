// RUN: bs-opt %s -p 'default{cpu=skylake-avx512}' | filecheck %s
// RUN: bs-opt %s -p 'default{cpu=skylake-avx512}' | filecheck %s --check-prefix=GONE
// RUN: bs-opt %s -p 'default{cpu=skylake-avx512}' | filecheck %s --check-prefix=PHASES
// RUN: bs-opt %s -p default | filecheck %s --check-prefix=HOST
// RUN: bs-opt %s -p 'default{cpu=skylake-avx512}' --target 'llvm-ir{cpu=skylake-avx512}' | filecheck %s --check-prefix=IR512
// RUN: bs-opt %s --target 'llvm-ir{cpu=skylake-avx512}' | filecheck %s --check-prefix=IR512
// RUN: bs-opt %s -p 'default{cpu=haswell}' --target 'llvm-ir{cpu=haswell}' | filecheck %s --check-prefix=IR256
// RUN: bs-opt %s -p 'default{cpu=haswell}' --target 'llvm-ir{cpu=haswell}' | filecheck %s --check-prefix=NO16

// The default pipeline end to end on a small ResNet-like graph: BN -> ReLU,
// a convolution (a library call), a shortcut add -> ReLU -> MaxPool, and a
// dropout. Two stacks become two kernels; each kernel becomes llvm.funcs, one
// per phase (_p0, _p1, ...), plus a loop.kernel_info for the runtime. The
// graph function keeps its conv and calls the kernels with loop.launch.
// --target llvm-ir runs the pipeline itself when the module isn't lowered
// yet (fifth RUN line). AVX-512 gives 16 lanes, AVX2 (haswell) 8.

func.func @forward(%x: tensor<?x37x13x13xf32>, %g: tensor<37xf32>, %b: tensor<37xf32>, %m: tensor<37xf32>, %v: tensor<37xf32>, %w: tensor<37x37x3x3xf32>) -> tensor<?x37x7x7xf32> {
  %bn = nn.batch_norm %x weight %g bias %b mean %m var %v {eps = 1.000000e-05 : f64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
  %r = nn.relu %bn : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %c = nn.conv2d %r, %w {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37x37x3x3xf32>) -> tensor<?x37x13x13xf32>
  %d = nn.dropout %c {p = 0.2 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %s = nn.add %r, %d : (tensor<?x37x13x13xf32>, tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>
  %o = nn.relu %s : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %p = nn.max_pool2d %o {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
  func.return %p : tensor<?x37x7x7xf32>
}

// CHECK-LABEL: func.func @forward
// CHECK-NEXT:    %r = loop.launch @stack0(%x, %g, %b, %m, %v) {{.*}}: (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
// CHECK-NEXT:    %c = nn.conv2d %r, %w
// CHECK-NEXT:    %p = loop.launch @stack1(%r, %c) {{.*}}: (tensor<?x37x13x13xf32>, tensor<?x37x13x13xf32>) -> tensor<?x37x7x7xf32>
// CHECK-NEXT:    func.return %p
// CHECK-NEXT:  }
//   stack0 (BN -> ReLU) has two phases: the per-channel alpha/beta, then the
//   elementwise nest; stack1 (add -> ReLU -> MaxPool) is one windowed phase.
// CHECK-DAG:   llvm.func @stack0_p0(%{{.+}}: i64, %{{.+}}: i64, %{{.+}}: !llvm.ptr) attributes {target_cpu = "skylake-avx512"
// CHECK-DAG:   llvm.func @stack0_p1(%{{.+}}: i64, %{{.+}}: i64, %{{.+}}: !llvm.ptr) attributes {target_cpu = "skylake-avx512"
// CHECK-DAG:   llvm.func @stack1_p0(%{{.+}}: i64, %{{.+}}: i64, %{{.+}}: !llvm.ptr) attributes {target_cpu = "skylake-avx512"
// CHECK-DAG:   loop.kernel_info {{{.*}}kernel = "stack0", phases = ["stack0_p0", "stack0_p1"], buffers = [memref<?x37x13x13xf32>, memref<37xf32>, memref<37xf32>, memref<37xf32>, memref<37xf32>, memref<?x37x13x13xf32>{{.*}}], {{.*}}target = "x86-64"}
// CHECK-DAG:   loop.kernel_info {{{.*}}kernel = "stack1", phases = ["stack1_p0"], buffers = [memref<?x37x13x13xf32>, memref<?x37x13x13xf32>, memref<?x37x7x7xf32>{{.*}}], {{.*}}target = "x86-64"}

// Exactly those three phases.
// PHASES-COUNT-3: llvm.func @stack{{[0-9]+}}_p
// PHASES-NOT:     llvm.func @stack{{[0-9]+}}_p

// Nothing of the higher levels is left.
// GONE-NOT: nn.stack
// GONE-NOT: nn.dropout
// GONE-NOT: nn.batch_norm
// GONE-NOT: loop.nest
// GONE-NOT: loop.tile
// GONE-NOT: simd.
// GONE-NOT: func.func @stack
// GONE-NOT: bs.kernel

// With no options the pipeline targets this machine's CPU.
// HOST:     loop.launch @stack0
// HOST-DAG: llvm.func @stack0_p0({{.*}}target_cpu = "{{.+}}"
// HOST-DAG: llvm.func @stack1_p0({{.*}}target_cpu = "{{.+}}"

// IR512-DAG: define void @stack0_p0(
// IR512-DAG: define void @stack0_p1(
// IR512-DAG: define void @stack1_p0(
// IR512-DAG: <16 x float>

// IR256-DAG: define void @stack0_p0(
// IR256-DAG: define void @stack1_p0(
// IR256-DAG: <8 x float>
// NO16-NOT:  <16 x float>
