"""Elementwise operations: activations and their derivatives, dropout, the losses with their
output δ, and the optimizer updates on the flat parameter vector."""

import numpy as np

from ..jit import jit, jit_inline
from ..opcodes import RELU, SIGMOID, SOFTMAX_CE


@jit_inline
def _zero(v):
    """v (1-D) = 0. A loop, not ``v[:] = 0``: numba's generic slice assignment compiles
    for seconds per array type, and every second counts on a Pi."""
    for k in range(v.size):
        v[k] = 0


@jit
def _activation_forward(kind, A, xo, yo, size, one):
    x = A[xo:xo + size]
    y = A[yo:yo + size]
    if kind == RELU:
        for k in range(size):
            z = x[k]
            y[k] = z if (z > 0 or z != z) else 0
    elif kind == SIGMOID:
        for k in range(size):
            y[k] = one / (one + np.exp(-x[k]))
    else:
        for k in range(size):
            y[k] = np.tanh(x[k])


@jit
def _activation_backward(kind, A, yo, D, do, size, one):
    """δ ⊙ f′(y), in place."""
    y = A[yo:yo + size]
    d = D[do:do + size]
    if kind == RELU:
        for k in range(size):
            if not y[k] > 0:
                d[k] = d[k] * 0
    elif kind == SIGMOID:
        for k in range(size):
            d[k] = d[k] * y[k] * (one - y[k])
    else:
        for k in range(size):
            d[k] = d[k] * (one - y[k] * y[k])


@jit
def _dropout_forward(A, xo, yo, mo, size, training):
    """Inverted dropout: y = x ⊙ mask while training (the mask at mo: 0, or 1/(1 − p)),
    y = x in inference."""
    x = A[xo:xo + size]
    y = A[yo:yo + size]
    if training:
        mask = A[mo:mo + size]
        for k in range(size):
            y[k] = x[k] * mask[k]
    else:
        for k in range(size):
            y[k] = x[k]


@jit
def _dropout_backward(A, mo, D, do, size):
    """δ ⊙ mask, in place."""
    mask = A[mo:mo + size]
    d = D[do:do + size]
    for k in range(size):
        d[k] = d[k] * mask[k]


@jit
def _loss(kind, A, yo, N, K, labels, targets, use_labels, D, count, one):
    """Mean loss over the batch (float64); ∂E/∂y into D[:N·K]. Formulas as in ``losses.py``."""
    y = A[yo:yo + N * K].reshape(N, K)
    d = D[:N * K].reshape(N, K)
    total = 0.0
    zero = one - one
    for n in range(N):
        yn, dn = y[n], d[n]
        if kind == SOFTMAX_CE:
            top = yn[0]
            for k in range(1, K):
                top = max(top, yn[k])
            s = zero
            for k in range(K):
                s += np.exp(yn[k] - top)
            log_sum = np.log(s)
            # Σt per row: 1 for labels; real targets need not sum to 1 (see losses.py).
            t_sum = one
            if not use_labels:
                t_sum = zero
                for k in range(K):
                    t_sum += targets[n * K + k]
            for k in range(K):
                log_prob = (yn[k] - top) - log_sum
                t = (one if labels[n] == k else zero) if use_labels else targets[n * K + k]
                total -= t * log_prob
                dn[k] = (np.exp(log_prob) * t_sum - t) / count
        else:
            for k in range(K):
                t = (one if labels[n] == k else zero) if use_labels else targets[n * K + k]
                diff = yn[k] - t
                total += 0.5 * diff * diff
                dn[k] = diff / count
    return total / N


@jit
def _sgd_update(p, g, velocity, lr, momentum, weight_decay):
    """PyTorch's SGD: g ← g + λp; v ← μv + g; p ← p − η·v (v is g itself when μ = 0).
    Hyper-parameters arrive cast to the parameters' dtype: float32 arithmetic, as numpy's."""
    for i in range(p.size):
        gi = g[i]
        if weight_decay != 0:
            gi = gi + weight_decay * p[i]
        if momentum != 0:
            velocity[i] = momentum * velocity[i] + gi
            gi = velocity[i]
        p[i] -= lr * gi


@jit
def _adam_update(p, g, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2,
                 correction1, correction2, eps, decay):
    """Adam (Kingma & Ba, alg. 1) with the bias corrections 1 − β₁ᵗ, 1 − β₂ᵗ given; first
    p ← p·decay, the decoupled weight decay 1 − ηλ of AdamW (1 for Adam: p unchanged)."""
    for i in range(p.size):
        gi = g[i]
        m[i] = m[i] * beta1 + one_minus_beta1 * gi
        v[i] = v[i] * beta2 + one_minus_beta2 * gi * gi
        p[i] = p[i] * decay - lr * (m[i] / correction1) / (np.sqrt(v[i] / correction2) + eps)
