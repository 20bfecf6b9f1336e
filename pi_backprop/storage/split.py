"""The sample store's train/validation split and the one default share held out.

A sample is in the validation split when a hash of its id's block (``SPLIT_BLOCK``
consecutive ids) falls in the lowest ``fraction`` of [0, 2**32). A pure function of the id,
so the split stays put as samples come and go; and samples captured a moment apart (which
look alike) stay on one side together, which keeps the validation score honest.
"""

import numpy as np

SPLIT_BLOCK = 8
VALIDATION_FRACTION = 0.2  # the default share held out
_HASH = 2654435761  # Knuth's multiplicative hash: consecutive blocks spread evenly over [0, 2**32)


def validation_mask(ids, fraction: float) -> np.ndarray:
    """bool, the shape of ``ids`` (ints >= 0): True for the ids in the validation split
    (``fraction`` in [0, 1))."""
    blocks = np.asarray(ids, dtype=np.uint64) // np.uint64(SPLIT_BLOCK)
    # (a·b mod 2**64) mod 2**32 = a·b mod 2**32: uint64 wrap-around changes nothing
    return (blocks * np.uint64(_HASH)) % np.uint64(2**32) < threshold(fraction)


def is_validation(sample_id: int, fraction: float) -> bool:
    """True if the sample with this id belongs to the validation split (``fraction`` in [0, 1))."""
    return bool(validation_mask(sample_id, fraction))


def threshold(fraction) -> int:
    """The hash value below which a block is in the validation split."""
    return int(round(fraction * 2**32))


# The same rule in SQL, with the threshold bound as :threshold (SQLite's integer division
# truncates like Python's for ids >= 0).
SQL_IS_VALIDATION = f"(((id / {SPLIT_BLOCK}) * {_HASH}) % 4294967296) < :threshold"
