"""The memory budget: what one file or model may make pi-backprop allocate.

A few kilobytes can ask for gigabytes: a model definition with a Dense layer of 10⁹ units,
a checkpoint header naming one, an ``.npz`` whose arrays inflate (or merely claim) to
terabytes, a PNG of 9000×9000 pixels. On a 512 MB Pi under ``MemoryMax=`` that is a crash
and a restart loop. Each reader computes, before allocating, what a file would cost and
refuses it with one line when that exceeds the budget:

    budget.refuse_over(nbytes, f"{path}: its arrays", DataError)

The budget is ``DEFAULT_MB`` (sized for a 512 MB Pi), else ``$PI_BACKPROP_MEMORY_MB``, else
what ``set_limit`` was given: the ``--memory-budget`` option (which wins) or the service's
``service.memory_budget_mb``.
"""

import os

from .exc import ConfigError, PiBackpropError

DEFAULT_MB = 256
ENV_VAR = "PI_BACKPROP_MEMORY_MB"
MB = 1 << 20

_limit_mb = None        # set_limit's, else the environment's, else DEFAULT_MB
explicit = False        # set by the command line: a config file's value does not replace it


def limit_mb() -> int:
    """The budget in MiB."""
    if _limit_mb is not None:
        return _limit_mb
    value = os.environ.get(ENV_VAR)
    if value:
        return _checked(value, ENV_VAR)
    return DEFAULT_MB


def limit_bytes() -> int:
    return limit_mb() * MB


def set_limit(megabytes: int, *, from_command_line: bool = False) -> None:
    """Use a budget of ``megabytes`` MiB from now on (``ConfigError`` unless a positive int).
    A value from the command line is not replaced by a later one from a config file."""
    global _limit_mb, explicit
    if explicit and not from_command_line:
        return
    _limit_mb = _checked(megabytes, "the memory budget")
    explicit = explicit or from_command_line


def _checked(value: object, where: str) -> int:
    try:
        megabytes = int(value)
    except (TypeError, ValueError):
        megabytes = 0
    if megabytes < 1 or isinstance(value, bool):
        raise ConfigError(f"{where} must be a whole number of megabytes >= 1, got {value!r}")
    return megabytes


def refuse_over(nbytes: int, what: str, error: type[PiBackpropError]) -> None:
    """Raise ``error`` (one line: ``what`` would need ``nbytes``, the budget, the fix) if
    ``nbytes`` exceeds the budget."""
    if nbytes > limit_bytes():
        raise error(f"{what} would need {size_text(nbytes)} of memory, more than the memory budget of "
                    f"{size_text(limit_bytes())}; make it smaller, or raise the budget (--memory-budget MB, "
                    f"service.memory_budget_mb or ${ENV_VAR}) on a board that has the memory")


def size_text(count: float) -> str:
    """``count`` bytes as people read them: 950 B, 12.3 kB, 4.0 MB, 1.2 GB (powers of 1000)."""
    if count < 1000:
        return f"{count:.0f} B"
    for unit in ("kB", "MB", "GB"):
        count /= 1000
        if count < 1000:
            return f"{count:.1f} {unit}"
    return f"{count / 1000:.1f} TB"
