"""Dense products through numpy's matmul (BLAS): the one BLAS path of the numba backend,
for the fused step driven op by op (``op_by_op``) and the layer-level functions
(``layer_kernels``), where ``program.blas_pays``. The same formulas as ``ops/dense.py``.
"""

import numpy as np


def dense_forward(x, W, b, out) -> np.ndarray:
    """out = x · W + b.   x (N, I), W (I, O), b (O,), out (N, O), written and returned."""
    np.matmul(x, W, out=out)
    out += b
    return out


def dense_backward(x, W, dout, dW, db, dx=None):
    """∂E/∂W = xᵀ · δ into ``dW`` (I, O), ∂E/∂b = Σ_n δ into ``db`` (O,) and, unless ``dx`` is
    None, δ · Wᵀ into ``dx`` (N, I), which is returned.   x (N, I), W (I, O), δ = dout (N, O)."""
    np.matmul(x.T, dout, out=dW)
    np.sum(dout, axis=0, out=db)
    if dx is not None:
        np.matmul(dout, W.T, out=dx)
    return dx
