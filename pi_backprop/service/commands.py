"""What the world may ask of the service: one front door for every client.

Buttons, signals, the web page and MQTT all call ``Commands.submit``; none of them touches the
loop's trainer, store or hardware. Label commands take effect at once, in the caller's thread
(the next capture must see them); the others wait in a queue that the loop empties between
training bursts, so that only the loop's thread ever changes the trainer and the store.

    future = service.commands.submit("pause", source="web")
    future.result(timeout=5)              # "paused"; raises CommandError if it could not be done

Commands (arguments in brackets are optional):

label_start   label [seconds]  every sample captured from now is labelled ``label`` (a class
                               index or name) until ``label_stop`` from the same source, or for
                               ``seconds`` (a web page that goes away stops labelling)
label_stop                     this source stops labelling
label_next    label            the next sample captured is labelled ``label`` (once)
pause                          stop training (capturing, storing and predicting go on)
resume                         train again after ``pause``, or after training stopped diverged
delete_sample id               remove one sample from the store (result: True if it was there)
roll_back     [step]           go back to the newest checkpoint (at or before ``step``); newer
                               checkpoint files are set aside, not deleted (result: the step)
clear_class   label            remove every sample of one class from the store (result: how many)
checkpoint                     write a checkpoint now (result: its path, or None: nothing new)
reload                         re-read the config file and apply what may change live (SIGHUP)
stop                           finish the current step, write a checkpoint, stop (SIGTERM)

Questions (they change nothing; the loop answers them between bursts, as it owns the store):

overview                       the classes and their sample counts, the checkpoints, the
                               training switches (result: a dict, see ``Service._overview``)
samples       label [limit]    the newest samples of a class, newest first (result: a list
                               of (id, time, x); at most ``limit``, default 12, up to 100)
history                        the training history, oldest first (result: a list of
                               ``storage.store.Metric``)
"""

import concurrent.futures
import dataclasses
import logging
import numbers
import queue
import threading
from collections.abc import Callable, Iterable

from ..exc import CommandError, PiBackpropError

_log = logging.getLogger(__name__)

MAX_WHOLE = 2**63 - 1   # ids and steps: SQLite's and numpy's int64


@dataclasses.dataclass(frozen=True)
class Spec:
    """required, optional : argument names; at_once: run in the caller's thread, not the loop's."""

    required: tuple = ()
    optional: tuple = ()
    at_once: bool = False


COMMANDS = {
    "label_start": Spec(("label",), ("seconds",), at_once=True),
    "label_stop": Spec(at_once=True),
    "label_next": Spec(("label",), at_once=True),
    "pause": Spec(),
    "resume": Spec(),
    "delete_sample": Spec(("id",)),
    "clear_class": Spec(("label",)),
    "roll_back": Spec((), ("step",)),
    "checkpoint": Spec(),
    "reload": Spec(),
    "stop": Spec(at_once=True),
    "overview": Spec(),
    "samples": Spec(("label",), ("limit",)),
    "history": Spec(),
}
MAX_SAMPLES_LISTED = 100


@dataclasses.dataclass(frozen=True)
class Command:
    """One request: ``name`` (a key of ``COMMANDS``), ``args`` (checked), ``source`` (who sent
    it: "buttons", "web", "mqtt", "SIGHUP", ...; label holds are kept per source)."""

    name: str
    args: dict
    source: str


class Commands:
    """The service's front door. ``class_names`` turn a ``label`` given by name into its index.

    The loop registers a handler per command (``handle``) and calls ``run_queued()`` often;
    ``close()`` (at stop) fails what is still queued and refuses new commands.
    """

    def __init__(self, class_names: Iterable[str]):
        self.class_names = tuple(class_names)
        self._handlers = {}
        self._queue = queue.SimpleQueue()   # put() is safe in a signal handler
        self._closed = False
        self._loop_thread = None

    def handle(self, name: str, handler: Callable[[Command], object]) -> None:
        """``handler(command) -> result`` carries out ``name``."""
        if name not in COMMANDS:
            raise CommandError(f"unknown command {name!r}")
        self._handlers[name] = handler

    def submit(self, name: str, *, source: str = "", **args: object) -> concurrent.futures.Future:
        """Check and send one command; returns a Future of its result.

        Bad commands raise ``CommandError`` here, in the sender's thread. A queued command's
        Future completes once the loop has run it (its exception, if it failed, is a
        ``PiBackpropError`` with a one-line message).
        """
        command = self._checked(name, args, source)
        if self._closed:
            raise CommandError(f"{name}: the service has stopped")
        future = _Future(self)
        if COMMANDS[name].at_once:
            self._run(command, future)
            return future
        self._queue.put((command, future))
        if self._closed:
            # close() ran between the check above and put(): fail what it may have missed. No
            # lock instead: the SIGHUP handler submits too, and may interrupt a holder of it.
            self._fail_queued()
        return future

    def in_loop_thread(self) -> bool:
        """True in the thread that runs the queued commands (the service loop's)."""
        return self._loop_thread == threading.get_ident()

    def run_queued(self) -> int:
        """Run the queued commands in this (the loop's) thread; returns how many ran."""
        self._loop_thread = threading.get_ident()
        count = 0
        while True:
            try:
                command, future = self._queue.get_nowait()
            except queue.Empty:
                return count
            self._run(command, future)
            count += 1

    def close(self) -> None:
        """Refuse new commands and fail the queued ones (their senders get ``CommandError``)."""
        self._closed = True
        self._fail_queued()

    def _fail_queued(self) -> None:
        while True:
            try:
                command, future = self._queue.get_nowait()
            except queue.Empty:
                return
            future.set_exception(CommandError(f"{command.name}: the service stopped first"))

    def _run(self, command: Command, future: concurrent.futures.Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        handler = self._handlers.get(command.name)
        try:
            if handler is None:
                raise CommandError(f"{command.name}: not available in this service")
            future.set_result(handler(command))
        except PiBackpropError as error:   # the sender shows it; the handler logged what the journal needs
            future.set_exception(error)
        except Exception as error:   # noqa: BLE001 - a bug in one command must not end the service
            _log.exception("command %s from %s failed", command.name, command.source or "?")
            future.set_exception(CommandError(f"{command.name} failed: {error}"))
        except BaseException:   # KeyboardInterrupt, SystemExit: the sender must not wait forever
            future.set_exception(CommandError(f"{command.name}: interrupted"))
            raise

    def _checked(self, name: str, args: dict, source: str) -> Command:
        spec = COMMANDS.get(name)
        if spec is None:
            raise CommandError(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
        missing = [key for key in spec.required if key not in args]
        unknown = sorted(set(args) - set(spec.required) - set(spec.optional))
        if missing or unknown:
            allowed = ", ".join(spec.required + spec.optional) or "none"
            raise CommandError(f"{name}: {'missing ' + ', '.join(missing) if missing else ''}"
                               f"{'; ' if missing and unknown else ''}"
                               f"{'unknown ' + ', '.join(unknown) if unknown else ''} (arguments: {allowed})")
        checked = {key: value for key, value in args.items() if value is not None or key in spec.required}
        if "label" in checked:
            checked["label"] = self.class_index(checked["label"])
        if "seconds" in checked:
            checked["seconds"] = _seconds(name, checked["seconds"])
        for key in ("id", "step", "limit"):
            if key in checked:
                checked[key] = _whole(name, key, checked[key])
        if checked.get("limit", 1) > MAX_SAMPLES_LISTED or checked.get("limit", 1) < 1:
            raise CommandError(f"{name}: limit must be 1 to {MAX_SAMPLES_LISTED}, got {checked['limit']}")
        return Command(name, checked, str(source))

    def class_index(self, label: int | str) -> int:
        """A class index from an index or a class name."""
        if isinstance(label, str) and label in self.class_names:
            return self.class_names.index(label)
        if isinstance(label, numbers.Integral) and not isinstance(label, bool) and 0 <= label < len(self.class_names):
            return int(label)
        raise CommandError(f"label {label!r} is not one of the classes "
                           f"({', '.join(self.class_names)}) or their indices 0..{len(self.class_names) - 1}")


class _Future(concurrent.futures.Future):
    """A command's result; waiting for a queued one in the loop's own thread (a listener that
    runs there) raises ``CommandError`` instead of waiting for itself forever."""

    def __init__(self, commands: Commands):
        super().__init__()
        self._commands = commands

    def result(self, timeout: float | None = None) -> object:
        if not self.done() and self._commands.in_loop_thread():
            raise CommandError("a queued command's result cannot be awaited in the service loop's own "
                               "thread (it runs after this listener returns)")
        return super().result(timeout)


def _whole(name: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= MAX_WHOLE:
        raise CommandError(f"{name}: {key} must be a whole number >= 0, got {value!r}"
                           f"{' (at most 2**63 - 1)' if isinstance(value, numbers.Integral) and value > 0 else ''}")
    return int(value)


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):
        raise CommandError(f"{name}: seconds must be a number > 0, got {value!r}")
    return float(value)
