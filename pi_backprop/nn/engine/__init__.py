"""The one compiled engine of the numba backend: op codes (``opcodes``, numba-free), the
compiled op kernels (``ops``), the fused step's interpreter (``kernels.run``), a model's op
program and workspaces (``program``), the ops a driven step hands out (``op_by_op``), the
layer-level functions of the numba backend (``layer_kernels``) and the warm-up.

Every module of this package that numba compiles code from is hashed into the compiled
cache's key (``cache``): an edit to any of them compiles afresh."""
