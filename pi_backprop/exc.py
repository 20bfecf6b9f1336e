"""Every error pi-backprop raises on purpose.

Each class also subclasses the builtin a caller would expect (``ValueError`` for bad
values, ``RuntimeError`` for hardware), so ``except ValueError`` keeps working. The
message is one line that says what is wrong and, where it can, what to do: the command
line prints ``str(error)`` and exits with status 2.
"""


class PiBackpropError(Exception):
    """Base class: a problem the user can fix. ``str()`` is the one-line message."""


class ShapeError(PiBackpropError, ValueError):
    """An array has the wrong shape or dtype for the layer or loss it is given to."""


class InputError(PiBackpropError, ValueError):
    """Input values are unusable: NaN/inf, a label out of range, an empty batch."""


class ModelDefinitionError(PiBackpropError, ValueError):
    """A model definition (TOML) is malformed or its layers do not fit together."""


class ConfigError(PiBackpropError, ValueError):
    """A configuration key or command-line value is unknown or out of range."""


class BackendError(PiBackpropError, ValueError):
    """An unknown kernel backend was asked for, or it cannot be loaded."""


class CheckpointError(PiBackpropError, ValueError):
    """A checkpoint file is damaged, foreign, unsafe or does not fit the model."""


class DataError(PiBackpropError, ValueError):
    """A data file or sample store cannot be read or does not fit the model."""


class HardwareError(PiBackpropError, RuntimeError):
    """A camera, sensor, LED or button cannot be opened or used; the message names the fix."""
