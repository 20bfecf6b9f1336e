#!/bin/bash
# Install pi-backprop as a systemd service on a Raspberry Pi, from this checkout.
#
#   scripts/install-service.sh               install or update, then (re)start the service
#   scripts/install-service.sh --uninstall   remove program and unit; keep data and config
#   scripts/install-service.sh --uninstall --purge   also delete data, config and the user
#   scripts/install-service.sh --dry-run     print what would be done, change nothing
#
# Safe to run again: each step checks what is already there. Needs root (re-runs itself
# with sudo) and, for the first install, the network (apt and pip).
set -eu

NAME=pi-backprop
SERVICE_USER=pi-backprop
SERVICE_GROUPS="gpio video spi i2c"
PREFIX=/opt/pi-backprop
VENV=$PREFIX/venv
CONFIG_DIR=/etc/pi-backprop
CONFIG=$CONFIG_DIR/config.toml
UNIT=/etc/systemd/system/$NAME.service
STATE_DIR=/var/lib/pi-backprop
CACHE_DIR=/var/cache/pi-backprop
NUMBA_CACHE=$CACHE_DIR/numba
SOURCE=$(cd "$(dirname "$0")/.." && pwd)

DRY_RUN=0
UNINSTALL=0
PURGE=0
ORIGINAL_ARGS=("$@")

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
}

for arg in "$@"; do
    case $arg in
        --dry-run) DRY_RUN=1 ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) PURGE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install-service.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$PURGE" = 1 ] && [ "$UNINSTALL" = 0 ]; then
    echo "install-service.sh: --purge goes with --uninstall" >&2
    exit 2
fi

# Every command that changes the system goes through run: printed, and skipped in a dry run.
run() {
    echo "+$(printf ' %q' "$@")"
    if [ "$DRY_RUN" = 0 ]; then
        "$@"
    fi
}
step() { echo "==> $*"; }
warn() { echo "warning: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    if [ "$DRY_RUN" = 1 ]; then
        echo "(dry run as a normal user: a real run needs root and re-runs itself with sudo)"
    else
        exec sudo -- bash "$0" "${ORIGINAL_ARGS[@]}"
    fi
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
available() { apt-cache show "$1" >/dev/null 2>&1; }

install_packages() {
    step "apt packages"
    # numpy and numba from apt: built for this Pi and tested together, nothing to compile.
    # 32-bit Raspberry Pi OS has no numba: the numpy backend runs the same code there.
    local wanted="python3-venv python3-pip python3-numpy python3-gpiozero python3-lgpio python3-spidev"
    case $(dpkg --print-architecture 2>/dev/null || echo unknown) in
        arm64|amd64) wanted="$wanted python3-numba" ;;
        *) echo "no numba on $(dpkg --print-architecture 2>/dev/null || uname -m): the numpy backend will be used" ;;
    esac
    # picamera2 comes from the Raspberry Pi OS archive only.
    if available python3-picamera2; then
        wanted="$wanted python3-picamera2"
    else
        warn "python3-picamera2 is not in this system's apt sources: the camera will not work (sensors and simulated sources will)"
    fi
    local missing=""
    for package in $wanted; do
        installed "$package" || missing="$missing $package"
    done
    if [ -n "$missing" ]; then
        run apt-get update
        # shellcheck disable=SC2086
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
    else
        echo "all present:$(printf ' %s' $wanted)"
    fi
}

create_user() {
    step "service user $SERVICE_USER (groups: $SERVICE_GROUPS)"
    for group in $SERVICE_GROUPS; do
        # On Raspberry Pi OS these exist and own the devices; elsewhere they are created empty.
        getent group "$group" >/dev/null || run groupadd --system "$group"
    done
    if id -u "$SERVICE_USER" >/dev/null 2>&1; then
        echo "user $SERVICE_USER exists"
    else
        run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "pi-backprop service" "$SERVICE_USER"
    fi
    run usermod --append --groups "$(echo "$SERVICE_GROUPS" | tr ' ' ',')" "$SERVICE_USER"
}

install_program() {
    step "virtual environment $VENV (with the system's numpy, numba, picamera2, gpiozero)"
    if grep -qs "include-system-site-packages = true" "$VENV/pyvenv.cfg"; then
        echo "venv exists"
    else
        run install -d -m 0755 "$PREFIX"
        run python3 -m venv --system-site-packages "$VENV"
    fi
    step "pip install $SOURCE[pi]"
    # --upgrade reinstalls this checkout; only-if-needed keeps apt's numpy and numba.
    run "$VENV/bin/pip" install --no-cache-dir --disable-pip-version-check --upgrade \
        --upgrade-strategy only-if-needed "$SOURCE[pi]"
}

install_config() {
    step "config $CONFIG"
    run install -d -m 0755 "$CONFIG_DIR"
    if [ -e "$CONFIG" ]; then
        echo "kept the existing $CONFIG; the current defaults are in $CONFIG.default"
    else
        run install -m 0644 "$SOURCE/systemd/pi-backprop.toml" "$CONFIG"
    fi
    run install -m 0644 "$SOURCE/systemd/pi-backprop.toml" "$CONFIG.default"
}

warm_cache() {
    step "numba kernel cache $NUMBA_CACHE (compiled for this CPU, as $SERVICE_USER)"
    # systemd creates these at start too; the warm-up runs before the first start.
    run install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0750 "$STATE_DIR"
    run install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0755 "$CACHE_DIR" "$NUMBA_CACHE"
    if ! run runuser -u "$SERVICE_USER" -- env --chdir="$STATE_DIR" NUMBA_CACHE_DIR="$NUMBA_CACHE" HOME="$STATE_DIR" \
            "$VENV/bin/pi-backprop" warmup; then
        warn "warm-up failed: the service will compile its kernels at the first start (slower)"
    fi
}

install_unit() {
    step "systemd unit $UNIT"
    run install -m 0644 "$SOURCE/systemd/pi-backprop.service" "$UNIT"
    run systemctl daemon-reload
    run systemctl enable "$NAME.service"
    # restart rather than start: a re-install must run the new code.
    run systemctl restart "$NAME.service"
}

summary() {
    cat <<EOF

pi-backprop is installed$( [ "$DRY_RUN" = 1 ] && echo " (dry run: nothing was changed)" ).
  program  $VENV/bin/pi-backprop
  config   $CONFIG   (edit, then: sudo systemctl reload $NAME)
  data     $STATE_DIR   (samples.db, checkpoints)
  kernels  $NUMBA_CACHE
  unit     $UNIT
  status   systemctl status $NAME
  journal  journalctl -u $NAME -f        (add -b for this boot, -p warning for problems only)
  samples  sudo -u $SERVICE_USER $VENV/bin/pi-backprop data stats --state-dir $STATE_DIR
  remove   $SOURCE/scripts/install-service.sh --uninstall   (keeps data; add --purge to delete it)
EOF
    if [ ! -e /dev/spidev0.0 ]; then
        echo "note: SPI is off (no /dev/spidev0.0); for an MCP3008: sudo raspi-config nonint do_spi 0"
    fi
}

uninstall() {
    step "stop and remove the service"
    if [ -e "$UNIT" ]; then
        run systemctl disable --now "$NAME.service"
        run rm -f "$UNIT"
        run systemctl daemon-reload
        run systemctl reset-failed "$NAME.service" || true
    else
        echo "no unit at $UNIT"
    fi
    if [ -x "$VENV/bin/pi-backprop" ] && [ -f "$CONFIG" ]; then
        step "remove its device from Home Assistant (when mqtt is on)"
        run runuser -u "$SERVICE_USER" -- "$VENV/bin/pi-backprop" mqtt forget --if-enabled --config "$CONFIG" \
            || warn "the Home Assistant device is still there: 'pi-backprop mqtt forget' it from another install"
    fi
    step "remove the program and the kernel cache"
    run rm -rf "$PREFIX" "$CACHE_DIR"
    if [ "$PURGE" = 1 ]; then
        step "purge: data, config and the service user"
        run rm -rf "$STATE_DIR" "$CONFIG_DIR"
        if id -u "$SERVICE_USER" >/dev/null 2>&1; then
            run userdel "$SERVICE_USER"
        fi
        echo "pi-backprop is removed, with its data."
    else
        echo "pi-backprop is removed; kept: data $STATE_DIR, config $CONFIG, user $SERVICE_USER"
        echo "(delete them too with: $0 --uninstall --purge)"
    fi
}

if [ "$UNINSTALL" = 1 ]; then
    uninstall
else
    if [ ! -f "$SOURCE/setup.cfg" ] || [ ! -f "$SOURCE/systemd/pi-backprop.service" ]; then
        echo "install-service.sh: $SOURCE is not a pi-backprop checkout" >&2
        exit 2
    fi
    install_packages
    create_user
    install_program
    install_config
    warm_cache
    install_unit
    summary
fi
