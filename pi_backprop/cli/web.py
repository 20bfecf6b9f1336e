"""``pi-backprop web token``: the web page's address with its token; ``--rotate`` makes a
new token (the service takes it at once: pages opened with the old one must be opened
again with the new address)."""

import argparse
import socket
from pathlib import Path

from .. import paths
from ..service.config import load_config
from ..service.web import token_path
from ..service.web.access import Access, is_loopback, load_or_create_token, write_token

INSTALLED_CONFIG = Path("/etc/pi-backprop/config.toml")
EXAMPLES = """examples:
  pi-backprop web token                                   the address to open
  sudo pi-backprop web token --state-dir /var/lib/pi-backprop --rotate
"""


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    parser.add_argument("what", choices=("token",), help="token: show the page's address with its token")
    parser.add_argument("--rotate", action="store_true", help="make a new token first (the old one stops working)")
    add_service_arguments(parser)


def add_service_arguments(parser):
    parser.add_argument("--config", metavar="FILE",
                        help=f"the service's TOML config (default: {INSTALLED_CONFIG} where it exists, "
                             "else built-in defaults)")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="the service's state directory (default: service.state_dir, $STATE_DIRECTORY, "
                             "else ~/.local/state/pi-backprop; the installed service's is /var/lib/pi-backprop)")


def service_config(args):
    """The config the service runs with: --config, the installed one, or the defaults."""
    path = args.config or (INSTALLED_CONFIG if INSTALLED_CONFIG.is_file() else None)
    return load_config(path)


def page_address(config, state_dir: Path, *, create: bool = False) -> str:
    """Where the page is, in words, with the token where one is needed (made with ``create``)."""
    if not config.web.enabled:
        return "off (web.enabled = false)"
    host, port = config.web.host, config.web.port
    if is_loopback(host):
        return (f"http://127.0.0.1:{port}/ (this machine only; from another: "
                f"ssh -L {port}:127.0.0.1:{port} {socket.gethostname()})")
    path = token_path(config, state_dir)
    if create:
        load_or_create_token(path)
    access = Access(host, port, path)
    token = access.token
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    if token is None:
        return f"http://{shown}:{port}/ (no token yet in {path}: the service makes one when it starts)"
    return access.url(shown)


def state_dir_of(args, config) -> Path:
    return Path(args.state_dir or config.service.state_dir or paths.state_dir())


def run(args) -> int:
    config = service_config(args)
    state_dir = state_dir_of(args, config)
    if is_loopback(config.web.host):
        print(page_address(config, state_dir))
        print("on 127.0.0.1 the page needs no token; set web.host to serve the LAN (then it does)")
        return 0
    if args.rotate:
        write_token(token_path(config, state_dir))
    print(page_address(config, state_dir, create=True))
    return 0
