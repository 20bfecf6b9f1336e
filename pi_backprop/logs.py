"""Logging set-up for the command line and the service.

Under systemd (``$JOURNAL_STREAM`` set) lines carry a ``<N>`` priority prefix and no
timestamp: the journal adds its own. Elsewhere (a terminal, ``nohup``) lines are plain with
a timestamp.
"""

import logging
import os
import sys

# syslog priorities that sd-daemon(3) understands as a line prefix.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record):
        prefix = _PRIORITY.get(record.levelno, 6)
        return f"<{prefix}>{super().format(record)}"


def under_journal() -> bool:
    """True when stderr is connected to the systemd journal."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        device, inode = (int(part) for part in stream.split(":"))
        info = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


def setup_logging(verbose: bool = False, level: str | None = None) -> None:
    """Send pi-backprop's log records to stderr, in the form that suits where it goes."""
    handler = logging.StreamHandler(sys.stderr)
    if under_journal():
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("pi_backprop")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else (level or "INFO").upper())
    root.propagate = False
