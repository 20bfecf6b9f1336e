"""The one compiled engine of the numba backend: op codes (``opcodes``, numba-free), the
compiled op kernels (``kernels``), a model's op program and workspaces (``program``), the
layer-level functions of the numba backend (``layer_kernels``) and the warm-up.

Every module of this package that numba compiles code from is hashed into the compiled
cache's key (``cache``): an edit to any of them compiles afresh."""
