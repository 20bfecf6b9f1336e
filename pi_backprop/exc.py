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


class StoreFullError(DataError):
    """The disk (or file system) holding the sample store is full: what was being written is not."""


class StoreLockedError(DataError):
    """Another process held the sample store's write lock for longer than the busy timeout."""


class StoreCorruptError(DataError):
    """The sample store file is damaged (SQLite reports corruption, or it is no database now):
    ``pi-backprop data check --repair`` salvages what can be read."""


class HardwareError(PiBackpropError, RuntimeError):
    """A camera, sensor, LED or button cannot be opened or used; the message names the fix."""


class CheckpointDamaged(CheckpointError):
    """The file is not intact (truncated, bit-flipped, half-written): an older one may be used."""


class CheckpointRefused(CheckpointError):
    """The file is intact but must not be used: pickled objects, unknown version, another model."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (``.errno`` says why, e.g. ENOSPC); older ones are intact."""

    def __init__(self, message: str, errno_value: int | None = None):
        super().__init__(message)
        self.errno = errno_value


class CheckpointDirBusy(CheckpointError):
    """Another process holds the checkpoint directory's lock (``.holder``: its pid, as written)."""

    def __init__(self, message: str, holder: str = "?"):
        super().__init__(message)
        self.holder = holder


class DivergenceError(PiBackpropError, ArithmeticError):
    """The loss (or gradient norm) became NaN/inf or too large; parameters are unusable.

    ``step`` is the step that produced ``value``. Call ``Trainer.restore()`` to go back to the
    last checkpoint; nothing diverged was written to disk.
    """

    def __init__(self, message: str, step: int, value: float):
        super().__init__(message)
        self.step, self.value = step, value


class DeviceClosed(HardwareError):
    """A camera, sensor, LED or button was used after ``close()``."""


class CommandError(PiBackpropError, ValueError):
    """A command sent to the service is unknown, has bad arguments, or cannot be carried out now."""


class ServiceBusy(CommandError):
    """The service did not answer a command in time (it is compiling, saving or stuck)."""


class StopWhileCompiling(BaseException):
    """The service's stop signal, raised into the kernels' first compile (nothing is there to
    save yet). Not a ``PiBackpropError``, and a ``BaseException`` so that no ``except
    Exception`` in the compiler swallows it."""
