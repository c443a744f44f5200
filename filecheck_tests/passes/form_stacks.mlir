// RUN: bs-opt %s -p bs-form-stacks | filecheck %s
// RUN: bs-opt %s -p bs-form-stacks | bs-opt -p bs-form-stacks | filecheck %s --check-prefix=IDEM
// RUN: bs-opt %s -p bs-form-stacks | filecheck %s --check-prefix=GONE

// bs-form-stacks groups the memory-bound layers of each graph function into
// nn.stack regions (a maximal, convex, connected group), removes dropout and
// identity, and leaves everything else as a library op. Stack names are unique
// in the module. A second run finds nothing more to group.

// IDEM-COUNT-11: nn.stack "stack
// IDEM-NOT:      nn.stack "stack

// No dropout or identity is left anywhere, inside or outside a stack.
// GONE-NOT: nn.dropout
// GONE-NOT: nn.identity

// BN -> ReLU -> MaxPool after a convolution: one stack, the conv outside it.
func.func @bn_relu_pool(%x: tensor<?x16x13x13xf32>, %w: tensor<37x16x3x3xf32>, %p: tensor<37xf32>) -> tensor<?x37x7x7xf32> {
  %c = nn.conv2d %x, %w {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x16x13x13xf32>, tensor<37x16x3x3xf32>) -> tensor<?x37x13x13xf32>
  %bn = nn.batch_norm %c weight %p bias %p mean %p var %p {eps = 1.000000e-05 : f64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
  %r = nn.relu %bn : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %mp = nn.max_pool2d %r {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x7x7xf32>
  func.return %mp : tensor<?x37x7x7xf32>
}

// CHECK-LABEL: func.func @bn_relu_pool
// CHECK-NEXT:    %c = nn.conv2d %x, %w
// CHECK-NEXT:    %mp = nn.stack "stack0" (%c, %p) : (tensor<?x37x13x13xf32>, tensor<37xf32>) -> tensor<?x37x7x7xf32> {
// CHECK-NEXT:    ^bb0(%[[X:.+]]: tensor<?x37x13x13xf32>, %[[P:.+]]: tensor<37xf32>):
// CHECK-NEXT:      %bn = nn.batch_norm %[[X]] weight %[[P]] bias %[[P]] mean %[[P]] var %[[P]]
// CHECK-NEXT:      %r = nn.relu %bn
// CHECK-NEXT:      %[[MP:.+]] = nn.max_pool2d %r
// CHECK-NEXT:      nn.yield %[[MP]] : tensor<?x37x7x7xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return %mp : tensor<?x37x7x7xf32>

// Dropout and identity disappear; the layers around them meet in one stack.
func.func @removable(%x: tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32> {
  %a = nn.relu %x : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %b = nn.dropout %a {p = 0.5 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %c = nn.identity %b : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %d = nn.sigmoid %c : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  func.return %d : tensor<?x37x13x13xf32>
}

// CHECK-LABEL: func.func @removable
// CHECK-NEXT:    %d = nn.stack "stack1" (%x)
// CHECK-NEXT:    ^bb0(%[[X:.+]]: tensor<?x37x13x13xf32>):
// CHECK-NEXT:      %a = nn.relu %[[X]]
// CHECK-NEXT:      %[[D:.+]] = nn.sigmoid %a
// CHECK-NEXT:      nn.yield %[[D]]
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return %d

// Only removable layers: nothing is left, not even an empty stack.
func.func @only_dropout(%x: tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32> {
  %b = nn.dropout %x {p = 0.5 : f64} : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %c = nn.identity %b : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  func.return %c : tensor<?x37x13x13xf32>
}

// CHECK-LABEL: func.func @only_dropout
// CHECK-NEXT:    func.return %x : tensor<?x37x13x13xf32>
// CHECK-NEXT:  }

// A ResNet shortcut: relu feeds the conv and, directly, the add. One stack
// with relu and add would need the conv's result inside itself (not convex),
// so relu and add land in different stacks with the conv between them; the
// add still takes the final relu with it.
func.func @shortcut(%x: tensor<?x37x13x13xf32>, %w: tensor<37x37x3x3xf32>) -> tensor<?x37x13x13xf32> {
  %r = nn.relu %x : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %c = nn.conv2d %r, %w {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37x37x3x3xf32>) -> tensor<?x37x13x13xf32>
  %s = nn.add %r, %c : (tensor<?x37x13x13xf32>, tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32>
  %o = nn.relu %s : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  func.return %o : tensor<?x37x13x13xf32>
}

// CHECK-LABEL: func.func @shortcut
// CHECK-NEXT:    %r = nn.stack "stack2" (%x) : (tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32> {
// CHECK-NEXT:    ^bb0(
// CHECK-NEXT:      nn.relu
// CHECK-NEXT:      nn.yield
// CHECK-NEXT:    }
// CHECK-NEXT:    %c = nn.conv2d %r, %w
// CHECK-NEXT:    %o = nn.stack "stack3" (%r, %c) : (tensor<?x37x13x13xf32>, tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32> {
// CHECK-NEXT:    ^bb0(%[[R:.+]]: tensor<?x37x13x13xf32>, %[[C:.+]]: tensor<?x37x13x13xf32>):
// CHECK-NEXT:      %s = nn.add %[[R]], %[[C]]
// CHECK-NEXT:      %[[O:.+]] = nn.relu %s
// CHECK-NEXT:      nn.yield %[[O]]
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return %o

// A flatten on its own is a free view in the framework: no stack.
func.func @lone_flatten(%x: tensor<?x37x1x1xf32>, %w: tensor<10x37xf32>) -> tensor<?x10xf32> {
  %f = nn.flatten %x {start_dim = 1 : i64, end_dim = -1 : i64} : tensor<?x37x1x1xf32> -> tensor<?x37xf32>
  %l = nn.linear %f, %w : (tensor<?x37xf32>, tensor<10x37xf32>) -> tensor<?x10xf32>
  func.return %l : tensor<?x10xf32>
}

// CHECK-LABEL: func.func @lone_flatten
// CHECK-NEXT:    %f = nn.flatten %x
// CHECK-NEXT:    %l = nn.linear %f, %w
// CHECK-NEXT:    func.return %l

// ... but a flatten after an optimizable layer joins its stack.
func.func @flatten_in_chain(%x: tensor<?x37x1x1xf32>) -> tensor<?x37xf32> {
  %r = nn.relu %x : tensor<?x37x1x1xf32> -> tensor<?x37x1x1xf32>
  %f = nn.flatten %r {start_dim = 1 : i64, end_dim = -1 : i64} : tensor<?x37x1x1xf32> -> tensor<?x37xf32>
  func.return %f : tensor<?x37xf32>
}

// CHECK-LABEL: func.func @flatten_in_chain
// CHECK-NEXT:    %f = nn.stack "stack4" (%x) : (tensor<?x37x1x1xf32>) -> tensor<?x37xf32> {
// CHECK-NEXT:    ^bb0(
// CHECK-NEXT:      %r = nn.relu
// CHECK-NEXT:      %[[F:.+]] = nn.flatten %r
// CHECK-NEXT:      nn.yield %[[F]]
// CHECK-NEXT:    }

// Two chains that share no value: two stacks.
func.func @two_chains(%x: tensor<?x37x13x13xf32>, %y: tensor<?x29xf32>) -> (tensor<?x37x13x13xf32>, tensor<?x29xf32>) {
  %a = nn.relu %x : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %b = nn.tanh %y : tensor<?x29xf32> -> tensor<?x29xf32>
  %c = nn.sigmoid %a : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %d = nn.silu %b : tensor<?x29xf32> -> tensor<?x29xf32>
  func.return %c, %d : tensor<?x37x13x13xf32>, tensor<?x29xf32>
}

// CHECK-LABEL: func.func @two_chains
// CHECK-NEXT:    %c = nn.stack "stack5" (%x) : (tensor<?x37x13x13xf32>) -> tensor<?x37x13x13xf32> {
// CHECK-NEXT:    ^bb0(
// CHECK-NEXT:      %a = nn.relu
// CHECK-NEXT:      nn.sigmoid %a
// CHECK-NEXT:      nn.yield
// CHECK-NEXT:    }
// CHECK-NEXT:    %d = nn.stack "stack6" (%y) : (tensor<?x29xf32>) -> tensor<?x29xf32> {
// CHECK-NEXT:    ^bb0(
// CHECK-NEXT:      %b = nn.tanh
// CHECK-NEXT:      nn.silu %b
// CHECK-NEXT:      nn.yield
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return %c, %d

// A value used inside and outside the stack becomes a second stack output.
func.func @multi_out(%x: tensor<?x37x13x13xf32>, %p: tensor<37xf32>, %w: tensor<11x37x1x1xf32>) -> (tensor<?x11x13x13xf32>, tensor<?x37x6x6xf32>) {
  %bn = nn.batch_norm %x mean %p var %p {eps = 1.000000e-05 : f64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<37xf32>, tensor<37xf32>) -> tensor<?x37x13x13xf32>
  %r = nn.relu %bn : tensor<?x37x13x13xf32> -> tensor<?x37x13x13xf32>
  %c = nn.conv2d %r, %w {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x37x13x13xf32>, tensor<11x37x1x1xf32>) -> tensor<?x11x13x13xf32>
  %mp = nn.max_pool2d %r {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, ceil_mode = false, layout = "NCHW"} : tensor<?x37x13x13xf32> -> tensor<?x37x6x6xf32>
  func.return %c, %mp : tensor<?x11x13x13xf32>, tensor<?x37x6x6xf32>
}

// CHECK-LABEL: func.func @multi_out
// CHECK-NEXT:    %r, %mp = nn.stack "stack7" (%x, %p) : (tensor<?x37x13x13xf32>, tensor<37xf32>) -> (tensor<?x37x13x13xf32>, tensor<?x37x6x6xf32>) {
// CHECK-NEXT:    ^bb0(
// CHECK-NEXT:      %bn = nn.batch_norm
// CHECK-NEXT:      %[[R:.+]] = nn.relu %bn
// CHECK-NEXT:      %[[MP:.+]] = nn.max_pool2d %[[R]]
// CHECK-NEXT:      nn.yield %[[R]], %[[MP]]
// CHECK-NEXT:    }
// CHECK-NEXT:    %c = nn.conv2d %r, %w
// CHECK-NEXT:    func.return %c, %mp

// A DenseNet block, nested as Keras builds it: cat1 -> BN -> ReLU share a
// stack; cat2 (which reads cat1 directly and through the conv, so it starts a
// stack of its own) reads cat1's operands in place instead of cat1, which
// then is no stack output.
func.func @dense(%x: tensor<?x16x13x13xf32>, %p: tensor<16xf32>, %q: tensor<27xf32>, %w1: tensor<11x16x1x1xf32>, %w2: tensor<7x27x1x1xf32>) -> tensor<?x34x13x13xf32> {
  %bn1 = nn.batch_norm %x mean %p var %p {eps = 1.000000e-05 : f64, layout = "NCHW"} : (tensor<?x16x13x13xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<?x16x13x13xf32>
  %r1 = nn.relu %bn1 : tensor<?x16x13x13xf32> -> tensor<?x16x13x13xf32>
  %c1 = nn.conv2d %r1, %w1 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x16x13x13xf32>, tensor<11x16x1x1xf32>) -> tensor<?x11x13x13xf32>
  %cat1 = nn.cat %x, %c1 {axis = 1 : i64} : (tensor<?x16x13x13xf32>, tensor<?x11x13x13xf32>) -> tensor<?x27x13x13xf32>
  %bn2 = nn.batch_norm %cat1 mean %q var %q {eps = 1.000000e-05 : f64, layout = "NCHW"} : (tensor<?x27x13x13xf32>, tensor<27xf32>, tensor<27xf32>) -> tensor<?x27x13x13xf32>
  %r2 = nn.relu %bn2 : tensor<?x27x13x13xf32> -> tensor<?x27x13x13xf32>
  %c2 = nn.conv2d %r2, %w2 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, dilation = array<i64: 1, 1>, groups = 1 : i64, layout = "NCHW"} : (tensor<?x27x13x13xf32>, tensor<7x27x1x1xf32>) -> tensor<?x7x13x13xf32>
  %cat2 = nn.cat %cat1, %c2 {axis = 1 : i64} : (tensor<?x27x13x13xf32>, tensor<?x7x13x13xf32>) -> tensor<?x34x13x13xf32>
  func.return %cat2 : tensor<?x34x13x13xf32>
}

// CHECK-LABEL: func.func @dense
// CHECK-NEXT:    %r1 = nn.stack "stack8" (%x, %p)
// CHECK-NEXT:    ^bb0(
// CHECK-NEXT:      nn.batch_norm
// CHECK-NEXT:      nn.relu
// CHECK-NEXT:      nn.yield
// CHECK-NEXT:    }
// CHECK-NEXT:    %c1 = nn.conv2d %r1, %w1
// CHECK-NEXT:    %r2 = nn.stack "stack9" (%x, %c1, %q)
// CHECK-NEXT:    ^bb0(
// CHECK-NEXT:      %[[CAT1:.+]] = nn.cat
// CHECK-NEXT:      %bn2 = nn.batch_norm %[[CAT1]]
// CHECK-NEXT:      %[[R2:.+]] = nn.relu %bn2
// CHECK-NEXT:      nn.yield %[[R2]]
// CHECK-NEXT:    }
// CHECK-NEXT:    %c2 = nn.conv2d %r2, %w2
// CHECK-NEXT:    %cat2 = nn.stack "stack10" (%x, %c1, %c2)
// CHECK-NEXT:    ^bb0(
// CHECK-NEXT:      nn.cat %0, %1, %2
// CHECK-NEXT:      nn.yield
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return %cat2

// Layers that can't be lowered stay library ops: a dynamic non-batch extent.
func.func @dynamic_channels(%x: tensor<?x?xf32>) -> tensor<?x?xf32> {
  %a = nn.relu %x : tensor<?x?xf32> -> tensor<?x?xf32>
  func.return %a : tensor<?x?xf32>
}

// CHECK-LABEL: func.func @dynamic_channels
// CHECK-NEXT:    %a = nn.relu %x : tensor<?x?xf32> -> tensor<?x?xf32>
// CHECK-NEXT:    func.return %a
