"""The protocol between a model's op program (``program``) and the compiled engine
(``kernels``), defined once and free of numba, so that a program can be built, checked and
laid out where numba is not installed.

A program is an int64 array (layers, NCOLS): one row per layer, columns named below; sizes
are per sample, offsets in elements. A batch's workspace is two arrays (``kernels`` has the
full picture):
    WI  int64:           [header (HEADER slots, H_*) | op rows | max-pool arg-maxes]
    WF  the model dtype: [S (S_SIZE scalars, S_*) | A activations | D deltas | X scratch]
"""

# op kinds (column KIND): POOL is max pooling, AVGPOOL average pooling (also the global
# average, as one window the size of the plane)
DENSE, CONV, POOL, FLATTEN, RELU, SIGMOID, TANH, AVGPOOL, DROPOUT = 1, 2, 3, 4, 5, 6, 7, 8, 9
ACTIVATIONS = (RELU, SIGMOID, TANH)

# columns of an op row: where the input and output lie in A (IN, OUT) and their sizes; where
# W and b lie in the parameter vector (WOFF, BOFF); the input's C, H, W; F outputs (dense:
# C inputs, F outputs); OH, OW; kernel or pool window KH, KW; stride SH, SW; padding PH, PW;
# where a max pool's arg-maxes (ARG), a convolution's buffers (COLS) and a dropout's mask
# (MASK, in A: the caller writes it before each training step) lie.
(KIND, IN, OUT, IN_SIZE, OUT_SIZE, WOFF, BOFF, C, H, W, F, OH, OW, KH, KW, SH, SW, PH, PW, ARG,
 COLS, MASK) = range(22)
NCOLS = 22

# losses (the loss_kind argument)
SOFTMAX_CE, MSE = 0, 1
# optimizers (the opt_kind argument); FORWARD_ONLY runs inference
FORWARD_ONLY, SGD_UPDATE, ADAM_UPDATE = -1, 1, 2

# status codes: returned instead of the loss and set in S[S_STATUS] (a loss can be negative:
# cross-entropy takes any finite targets, so a negative return alone is not an error).
# NEED_CALLER: a step driven op by op stopped at an op its caller runs (kernels.run).
BAD_INPUT, BAD_LABEL, BAD_TARGET, BAD_PROGRAM, NEED_CALLER = -1.0, -2.0, -3.0, -4.0, -5.0

# scalar slots in S: batch size, the constant 1 in the model's dtype, eight optimizer
# hyper-parameters from S_HYPER on, the status of the last call, the factor 1 − ηλ of
# decoupled weight decay (AdamW; 1 for Adam)
S_N, S_ONE, S_HYPER, S_STATUS, S_DECAY = 0, 1, 2, 10, 11
S_SIZE = 16


def adam_scalars(lr, beta1, beta2, eps, step) -> tuple:
    """The eight Adam scalars the update kernel takes, in its order (S_HYPER on): lr, β1,
    1 − β1, β2, 1 − β2, the bias corrections 1 − β1^t and 1 − β2^t (``step`` t from 1), ε."""
    return lr, beta1, 1 - beta1, beta2, 1 - beta2, 1 - beta1 ** step, 1 - beta2 ** step, eps


def decay_factor(lr, weight_decay) -> float:
    """AdamW's decoupled weight decay as the factor the parameters are multiplied by first:
    1 − ηλ (PyTorch's ``param.mul_(1 - lr * weight_decay)``); exactly 1 without decay."""
    return 1 - lr * weight_decay

# image augmentation (``augment_images``): the columns of a step's uniform draws, a row per
# sample (U_*, named in DRAW_COLUMNS), and the slots of the settings vector (AUG_*, the
# ``[augment]`` keys named in AUG_KEYS; true is 1)
DRAW_COLUMNS = ("shift_rows", "shift_cols", "hflip", "rotate", "scale", "contrast", "brightness", "noise",
                "time_shift", "gain")
(U_SHIFT_ROWS, U_SHIFT_COLS, U_HFLIP, U_ROTATE, U_SCALE, U_CONTRAST, U_BRIGHTNESS, U_NOISE, U_TIME_SHIFT,
 U_GAIN) = range(len(DRAW_COLUMNS))
AUG_KEYS = ("shift", "hflip", "rotate", "scale", "contrast", "brightness", "noise")
AUG_SHIFT, AUG_HFLIP, AUG_ROTATE, AUG_SCALE, AUG_CONTRAST, AUG_BRIGHTNESS, AUG_NOISE = range(len(AUG_KEYS))
AUG_SLOTS = len(AUG_KEYS)

# slots of WI's header: batch size, layers, cols_size (per sample); where A and D start and
# end and X starts in WF (X runs to WF's end); for a step driven op by op: 1 in H_OP_BY_OP,
# where it stands (H_PC), which half of D holds δ (H_HALF) and the bits of its float64 loss
# (H_LOSS); see kernels.run
H_N, H_LAYERS, H_COLS, H_A, H_A_END, H_D, H_D_END, H_X, H_OP_BY_OP, H_PC, H_HALF, H_LOSS = range(12)
HEADER = 12

# each region of WF starts on a cache line
ALIGN_BYTES = 64
