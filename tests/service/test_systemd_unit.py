"""systemd/pi-backprop.service: the settings the service relies on, and systemd-analyze's verdict."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "pi-backprop.service"
INSTALLER = ROOT / "scripts" / "install-service.sh"
MAX_EXPOSURE = 2.5
SYSTEMD_UNITS = Path("/usr/lib/systemd/system")


def settings(section):
    """``{key: [values...]}`` of one section (keys may repeat; comments and blanks skipped)."""
    result, current = {}, None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        if current == section:
            result.setdefault(key, []).append(value)
    return result


SERVICE = settings("Service")


@pytest.mark.parametrize("key, value", [
    ("Type", "notify"),
    ("NotifyAccess", "main"),
    ("Restart", "on-failure"),
    ("User", "pi-backprop"),
    ("StateDirectory", "pi-backprop"),
    ("CacheDirectory", "pi-backprop"),
    ("WorkingDirectory", "/var/lib/pi-backprop"),
    ("ExecStart", "/usr/bin/env /opt/pi-backprop/venv/bin/pi-backprop run --config /etc/pi-backprop/config.toml"),
    ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("NoNewPrivileges", "yes"),
    ("CapabilityBoundingSet", ""),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    ("SystemCallArchitectures", "native"),
    # the JIT writes machine code and runs it; GPIO and camera are devices
    ("MemoryDenyWriteExecute", "no"),
    ("PrivateDevices", "no"),
])
def test_required_setting(key, value):
    assert SERVICE.get(key) == [value]


def test_numba_cache_points_into_the_cache_directory():
    assert "NUMBA_CACHE_DIR=%C/pi-backprop/numba" in SERVICE["Environment"]
    # ... the directory the installer warms, as the service user
    assert "NUMBA_CACHE_DIR=\"$NUMBA_CACHE\"" in INSTALLER.read_text()
    assert "NUMBA_CACHE=$CACHE_DIR/numba" in INSTALLER.read_text()
    assert "CACHE_DIR=/var/cache/pi-backprop" in INSTALLER.read_text()


def test_device_groups():
    groups = SERVICE["SupplementaryGroups"][0].split()
    assert set(groups) == {"gpio", "video", "spi", "i2c"}
    assert 'SERVICE_GROUPS="gpio video spi i2c"' in INSTALLER.read_text()


def test_device_allow_list_covers_gpio_spi_i2c_and_camera():
    assert SERVICE["DevicePolicy"] == ["closed"]
    allowed = {entry.split()[0] for entry in SERVICE["DeviceAllow"]}
    assert {"char-gpiochip", "char-spi", "char-i2c", "char-video4linux", "char-media",
            "char-dma_heap"} <= allowed
    assert all(entry.split()[1] == "rw" for entry in SERVICE["DeviceAllow"])


def test_sockets_allow_notify_and_the_web_page_on_the_local_networks_only():
    families = SERVICE["RestrictAddressFamilies"][0].split()
    assert "AF_UNIX" in families and {"AF_INET", "AF_INET6"} <= set(families)
    assert "PrivateNetwork" not in SERVICE          # a namespace of its own would hide the page from ssh -L
    assert SERVICE["IPAddressDeny"] == ["any"]
    allowed = SERVICE["IPAddressAllow"][0].split()
    assert "localhost" in allowed and "192.168.0.0/16" in allowed and "0.0.0.0/0" not in allowed


def seconds(value):
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_timeouts():
    assert seconds(SERVICE["WatchdogSec"][0]) >= 20          # the loop pings every half of it
    assert seconds(SERVICE["TimeoutStopSec"][0]) >= 5        # the service promises to stop in 5 s
    assert seconds(SERVICE["RestartSec"][0]) >= 1
    unit = settings("Unit")
    assert "StartLimitBurst" in unit and "StartLimitIntervalSec" in unit
    assert settings("Install")["WantedBy"] == ["multi-user.target"]


def test_unit_and_installer_agree_on_paths():
    text = INSTALLER.read_text()
    for fragment in ("VENV=$PREFIX/venv", "PREFIX=/opt/pi-backprop", "CONFIG=$CONFIG_DIR/config.toml",
                     "CONFIG_DIR=/etc/pi-backprop", "STATE_DIR=/var/lib/pi-backprop"):
        assert fragment in text


@pytest.fixture
def staged_root(tmp_path):
    """A file-system root with the installed program and systemd's own units, so that
    ``systemd-analyze verify --root`` checks the unit as it will be on the Pi."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    if not (SYSTEMD_UNITS / "sysinit.target").exists():
        pytest.skip(f"no systemd units in {SYSTEMD_UNITS} to verify against")
    program = tmp_path / "opt/pi-backprop/venv/bin/pi-backprop"
    program.parent.mkdir(parents=True)
    shutil.copy("/bin/true", program)
    (tmp_path / "bin").mkdir()
    shutil.copy(shutil.which("kill") or "/bin/kill", tmp_path / "bin/kill")
    (tmp_path / "usr/bin").mkdir(parents=True)
    shutil.copy("/usr/bin/env", tmp_path / "usr/bin/env")
    units = tmp_path / "usr/lib/systemd/system"
    shutil.copytree(SYSTEMD_UNITS, units, symlinks=True)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, tmp_path / "etc/systemd/system/pi-backprop.service")
    return tmp_path


def test_systemd_analyze_verify(staged_root):
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={staged_root}",
                             "pi-backprop.service"], capture_output=True, text=True, timeout=60)
    # verify exits 0 on warnings too: any output is a finding
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_systemd_analyze_security():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    if "--offline" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_systemd_analyze_verify_before_install():
    """Offline checks (CI, a reviewer's laptop) see the unit as shipped, before any venv exists."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "pi-backprop.service" not in result.stdout + result.stderr, \
        result.stdout + result.stderr
