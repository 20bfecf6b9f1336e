"""scripts/install-service.sh: syntax, and a --dry-run that names every step and changes nothing."""

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-service.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


def run_script(*args):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LC_ALL": "C"})


def commands(output):
    """The commands the script runs (or would run), as printed after '+ ' (shell-quoted)."""
    return [" ".join(shlex.split(line[2:])) for line in output.splitlines() if line.startswith("+ ")]


def test_syntax():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = SCRIPT.read_text()
    assert text.startswith("#!/bin/bash\n") and "\nset -eu\n" in text
    assert os.access(SCRIPT, os.X_OK)


@pytest.fixture(scope="module")
def dry_install():
    result = run_script("--dry-run")
    assert result.returncode == 0, result.stderr
    return result.stdout, commands(result.stdout)


@pytest.mark.parametrize("step", [
    # (a fragment of one printed command)
    "python3 -m venv --system-site-packages /opt/pi-backprop/venv",
    f"/opt/pi-backprop/venv/bin/pip install --no-cache-dir --disable-pip-version-check --upgrade "
    f"--upgrade-strategy only-if-needed {ROOT}[pi]",
    "install -m 0644 " + str(ROOT / "systemd" / "pi-backprop.toml") + " /etc/pi-backprop/config.toml.default",
    "runuser -u pi-backprop -- env --chdir=/var/lib/pi-backprop "
    "NUMBA_CACHE_DIR=/var/cache/pi-backprop/numba HOME=/var/lib/pi-backprop "
    "/opt/pi-backprop/venv/bin/pi-backprop warmup",
    "install -m 0644 " + str(ROOT / "systemd" / "pi-backprop.service") + " /etc/systemd/system/pi-backprop.service",
    "systemctl daemon-reload",
    "systemctl enable pi-backprop.service",
    "systemctl restart pi-backprop.service",
])
def test_dry_run_prints_each_step(dry_install, step):
    _, printed = dry_install
    assert step in printed


def test_dry_run_creates_the_user_with_the_device_groups(dry_install):
    output, printed = dry_install
    if any(c.startswith("useradd") for c in printed):       # absent where the user already exists
        useradd = next(c for c in printed if c.startswith("useradd"))
        assert "--system" in useradd and useradd.endswith(" pi-backprop")
    else:
        assert "user pi-backprop exists" in output
    assert "usermod --append --groups gpio,video,spi,i2c pi-backprop" in printed


def test_dry_run_step_order(dry_install):
    output, _ = dry_install
    headings = [line[4:].split()[0] for line in output.splitlines() if line.startswith("==> ")]
    assert headings == ["apt", "service", "virtual", "pip", "config", "numba", "systemd"]


def test_dry_run_config_is_installed_only_if_absent(dry_install):
    _, printed = dry_install
    config_copy = f"install -m 0644 {ROOT / 'systemd' / 'pi-backprop.toml'} /etc/pi-backprop/config.toml"
    assert (config_copy in printed) != Path("/etc/pi-backprop/config.toml").exists()


def test_dry_run_summary_says_where_things_are(dry_install):
    output, _ = dry_install
    for fragment in ("dry run: nothing was changed", "config   /etc/pi-backprop/config.toml",
                     "data     /var/lib/pi-backprop", "journalctl -u pi-backprop -f",
                     "systemctl status pi-backprop"):
        assert fragment in output


def test_dry_run_changes_nothing():
    before = {path: path.exists() for path in map(Path, ("/opt/pi-backprop", "/etc/pi-backprop",
                                                         "/etc/systemd/system/pi-backprop.service"))}
    run_script("--dry-run")
    assert {path: path.exists() for path in before} == before


@pytest.mark.parametrize("args, removed, kept", [
    (["--uninstall"], ["rm -rf /opt/pi-backprop /var/cache/pi-backprop"], ["/var/lib/pi-backprop"]),
    (["--uninstall", "--purge"], ["rm -rf /opt/pi-backprop /var/cache/pi-backprop",
                                  "rm -rf /var/lib/pi-backprop /etc/pi-backprop"], []),
])
def test_uninstall_keeps_data_unless_purged(args, removed, kept):
    result = run_script("--dry-run", *args)
    assert result.returncode == 0, result.stderr
    printed = commands(result.stdout)
    for command in removed:
        assert command in printed
    for path in kept:
        assert not any(path in command for command in printed)
        assert path in result.stdout                         # and says it kept them


@pytest.mark.parametrize("args, message", [
    (["--purge"], "--purge goes with --uninstall"),
    (["--frobnicate"], "unknown option --frobnicate"),
])
def test_bad_options_exit_2(args, message):
    result = run_script(*args)
    assert result.returncode == 2 and message in result.stderr
    assert commands(result.stdout) == []
