"""The engine's compiled operations, one module per kind: each op kernel works on the flat
buffers of a workspace (``kernels`` describes them) at offsets given in elements, and trusts
its inputs. ``kernels.run`` calls them for the fused step, ``layer_kernels`` for the numba
backend's layer-by-layer functions, ``op_by_op`` for the ops a driven step hands out.

Each op takes views of its operands first: loops indexed by range() variables over views
vectorise, where the same loops over offsets into the flat buffers do not (numba must allow
for negative indices there)."""
