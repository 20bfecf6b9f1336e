"""Who may use the web page: its token, the cookie that carries it, and the same-origin rule.

On a loopback address only this machine (or an ``ssh -L`` tunnel) reaches the page, and it
needs no token. On any other address every request needs the token: in the cookie that
opening ``/?token=…`` sets (HttpOnly, SameSite=Strict, so the token leaves the address bar
and no other site's page can send it), or as ``Authorization: Bearer …`` from a script.

Every request that changes something is a POST, and is refused unless it comes from the
page itself: its ``Origin`` (sent by browsers with every POST) must be the address it was
sent to. The ``Host`` header must name this server (a loopback name on a loopback address),
so a page elsewhere cannot reach a loopback server by making its own name point here (DNS
rebinding).
"""

import hmac
import ipaddress
import logging
import os
import secrets
from pathlib import Path

from ...exc import ConfigError
from ...storage.atomic import atomic_write

_log = logging.getLogger(__name__)

TOKEN_BYTES = 16                    # 128 random bits, as 32 hex digits
COOKIE = "pi_backprop_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """True for an address (or ``localhost``) that only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(path: Path) -> str | None:
    """The token in ``path``, or None when there is none (or what is there is no token)."""
    try:
        text = Path(path).read_text().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    except OSError as error:
        raise ConfigError(f"cannot read the web token {path}: {error.strerror or error}; check "
                          "web.token_file and its permissions") from None
    return text if len(text) == 2 * TOKEN_BYTES and all(c in "0123456789abcdef" for c in text) else None


def write_token(path: Path) -> str:
    """A new random token, written durably to ``path`` (mode 0600, kept by the owner of the
    one it replaces: ``sudo pi-backprop web token --rotate`` leaves it the service's); a
    running service takes it at the next request, and the old one no longer works."""
    token = secrets.token_hex(TOKEN_BYTES)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            owner = path.stat()
        except FileNotFoundError:
            owner = None
        with atomic_write(path, mode=0o600) as file:
            if owner is not None and os.geteuid() == 0:
                os.fchown(file.fileno(), owner.st_uid, owner.st_gid)
            file.write(token.encode() + b"\n")
    except OSError as error:
        raise ConfigError(f"cannot write the web token {path}: {error.strerror or error}; check "
                          "web.token_file and that its folder is writable") from None
    return token


def load_or_create_token(path: Path) -> str:
    """The token in ``path``, made there first if there is none; a file others may read is
    made private (0600) again."""
    token = read_token(path)
    if token is None:
        return write_token(path)
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)
        _log.warning("web token %s was readable by others; it is private again (mode 0600)", path)
    return token


class Access:
    """The rules for one server.

    host, port : where it listens; token_path : the token's file, None when no token is
    needed (a loopback address; else ``load_or_create_token`` made it first). The file is read
    again when it changes, so a rotated token takes over without a restart.
    """

    def __init__(self, host: str, port: int, token_path: Path | None):
        self.loopback = is_loopback(host)
        self.host, self.port, self.token_path = host, int(port), token_path
        self._seen = (None, None)   # (file's mtime and size, its token)

    @property
    def token(self) -> str | None:
        """The token in force, or None when none is needed."""
        if self.token_path is None:
            return None
        try:
            info = os.stat(self.token_path)
            key = (info.st_mtime_ns, info.st_size, info.st_ino)
        except OSError:
            key = None
        if key != self._seen[0] or self._seen[1] is None:
            token = read_token(self.token_path) if key is not None else None
            # A token file gone or broken while running: keep the last good one.
            self._seen = (key, token or self._seen[1])
        return self._seen[1]

    def host_allowed(self, header: str | None) -> bool:
        """The Host header names this server: on loopback, a loopback name and our port."""
        if not header:
            return False
        if not self.loopback:
            return True    # reached by whatever name the network gives the Pi; the token guards it
        name, port = _split_host(header)
        return name in LOOPBACK_NAMES and port in (None, self.port)

    def authorised(self, cookie_token: str | None, bearer: str | None) -> bool:
        """The request carries the token (or none is needed)."""
        if self.token_path is None:
            return True
        given = bearer or cookie_token
        return given is not None and self.token_matches(given)

    def token_matches(self, given: str) -> bool:
        token = self.token
        return token is not None and hmac.compare_digest(given.encode(), token.encode())

    @staticmethod
    def same_origin(origin: str | None, host: str | None) -> bool:
        """A POST comes from our own page: its Origin is ``http://<Host>``. Browsers send an
        Origin with every POST, so one without it is a program (curl, a script), which the
        token, or the loopback address, admits like any other request."""
        if origin is None:
            return True
        return host is not None and origin.lower() == f"http://{host.lower()}"

    def url(self, shown_host: str) -> str:
        """The address to open, with the token when one is needed."""
        host = f"[{shown_host}]" if ":" in shown_host else shown_host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")


def _split_host(header: str) -> tuple[str, int | None]:
    header = header.strip().lower()
    if header.startswith("["):   # [::1]:8474
        name, _, rest = header[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    else:
        name, _, port = header.partition(":")
        port = port or None
    try:
        return name, None if port is None else int(port)
    except ValueError:
        return name, -1
