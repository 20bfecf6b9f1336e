"""The one train/validation split rule, and the one default share held out.

A sample is in the validation split when its id's block (``SPLIT_BLOCK`` consecutive ids)
hashes below ``fraction`` of [0, 2**32): ``((id // 8) * 2654435761 + offset) mod 2**32``.
A pure function of the id, so the split stays put as samples come and go; and samples
captured a moment apart (which look alike) stay on one side together, which keeps the
validation score honest. The sample store uses its rows' ids; a data file its positions.

``offset`` is ``SPLIT_OFFSET`` for everything new: block 0 (a file's first eight samples, a
new store's first seven) then trains for any fraction up to 0.5, so a small file or the
first few samples a user collects are never all held out. A store created before 0.2
records no offset and keeps ``LEGACY_OFFSET`` (0, block 0 held out): its samples do not
change sides under a model already trained on them.
"""

import numpy as np

SPLIT_BLOCK = 8
VALIDATION_FRACTION = 0.2  # the default share held out
SPLIT_OFFSET = 2**31       # new stores and data files
LEGACY_OFFSET = 0          # stores made by 0.1 (no split_offset setting)
_HASH = 2654435761  # Knuth's multiplicative hash: consecutive blocks spread evenly over [0, 2**32)


def validation_mask(ids, fraction: float, offset: int = SPLIT_OFFSET) -> np.ndarray:
    """bool, the shape of ``ids`` (ints >= 0): True for the ids in the validation split
    (``fraction`` in [0, 1), ``offset`` in [0, 2**32))."""
    blocks = np.asarray(ids, dtype=np.uint64) // np.uint64(SPLIT_BLOCK)
    # (a·b + c mod 2**64) mod 2**32 = (a·b + c) mod 2**32: uint64 wrap-around changes nothing
    hashed = (blocks * np.uint64(_HASH) + np.uint64(offset)) % np.uint64(2**32)
    return hashed < threshold(fraction)


def is_validation(sample_id: int, fraction: float, offset: int = SPLIT_OFFSET) -> bool:
    """True if the sample with this id belongs to the validation split (``fraction`` in [0, 1))."""
    return bool(validation_mask(sample_id, fraction, offset))


def threshold(fraction) -> int:
    """The hash value below which a block is in the validation split."""
    return int(round(fraction * 2**32))


# The same rule in SQL, with :threshold and :offset bound (SQLite's integer division
# truncates like Python's for ids >= 0, and the product stays far below 2**63).
SQL_IS_VALIDATION = f"((((id / {SPLIT_BLOCK}) * {_HASH}) + :offset) % 4294967296) < :threshold"
