// RUN: bs-opt %s -p bs-form-stacks | filecheck %s

// A layer marked bs.operand_of_next was made for its user alone (a permute of
// an operand into the user's memory order, named after the user's node): it
// joins its user's stack, never its producer's. Here the add can't join the
// layer norm's stack (the library op between reads the norm), so without the
// mark the permute would sit in the norm's stack under the add's name.
func.func @f(%x: tensor<?x7x9x12xf32>, %w: tensor<12xf32>) -> tensor<?x9x7x12xf32> {
  %v = nn.layer_norm %x weight %w : tensor<12xf32> {eps = 1.0e-5 : f64, bs.node = "ln"} : tensor<?x7x9x12xf32> -> tensor<?x7x9x12xf32>
  %l = nn.library "lin"(%v) {bs.node = "lin"} : (tensor<?x7x9x12xf32>) -> tensor<?x9x7x12xf32>
  %p = nn.permute %v {dims = array<i64: 0, 2, 1, 3>, bs.node = "add", bs.operand_of_next} : tensor<?x7x9x12xf32> -> tensor<?x9x7x12xf32>
  %a = nn.add %l, %p {bs.node = "add"} : (tensor<?x9x7x12xf32>, tensor<?x9x7x12xf32>) -> tensor<?x9x7x12xf32>
  func.return %a : tensor<?x9x7x12xf32>
}

// CHECK-LABEL: func.func @f
// CHECK:         nn.stack "stack0"
// CHECK-NEXT:    ^{{.*}}:
// CHECK-NEXT:      nn.layer_norm
// CHECK-NEXT:      nn.yield
// CHECK:         nn.library
// CHECK:         nn.stack "stack1"
// CHECK-NEXT:    ^{{.*}}:
// CHECK-NEXT:      nn.permute
// CHECK-NEXT:      nn.add

// The same mark on a copy that only a library op reads (through a reshape), as
// in a window partition before a GEMM: no user's stack to join, so the copy
// joins its producer's stack, which then writes the new order, instead of
// reading the norm's result again in a stack of its own.
func.func @g(%x: tensor<?x7x9x12xf32>, %w: tensor<12xf32>) -> tensor<?x63x5xf32> {
  %v = nn.layer_norm %x weight %w : tensor<12xf32> {eps = 1.0e-5 : f64, bs.node = "ln"} : tensor<?x7x9x12xf32> -> tensor<?x7x9x12xf32>
  %p = nn.permute %v {dims = array<i64: 0, 2, 1, 3>, bs.node = "r", bs.operand_of_next} : tensor<?x7x9x12xf32> -> tensor<?x9x7x12xf32>
  %r = nn.reshape %p {bs.node = "r"} : tensor<?x9x7x12xf32> -> tensor<?x63x12xf32>
  %l = nn.library "lin"(%r) {bs.node = "lin"} : (tensor<?x63x12xf32>) -> tensor<?x63x5xf32>
  func.return %l : tensor<?x63x5xf32>
}

// CHECK-LABEL: func.func @g
// CHECK:         nn.stack "stack{{[0-9]+}}"
// CHECK-NEXT:    ^{{.*}}:
// CHECK-NEXT:      nn.layer_norm
// CHECK-NEXT:      nn.permute
// CHECK-NEXT:      nn.reshape
// CHECK-NEXT:      nn.yield
// CHECK-NOT:     nn.stack
// CHECK:         nn.library "lin"
