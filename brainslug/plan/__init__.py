"""The plan layer, framework-neutral: it imports neither torch nor TensorFlow.

A frontend captures its framework's graph as an `nn` module (`capture`); this
layer compiles the module's stacks for a backend, places library calls and
kernels in one schedule, plans the static buffer arena and describes the
result for `report()`. The frontend then binds the schedule to its tensors.
"""
