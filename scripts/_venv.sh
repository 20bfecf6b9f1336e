# Sourced by scripts/test, scripts/demo, scripts/bench and scripts/small-data: make .venv and
# install the project into it with the extras named in $1, only when setup.cfg changed since
# last time.
# Needs python3 >= 3.11 ($PYTHON overrides). Safe to source again and again.
set -eu
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
extras="$1"
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: pi-backprop needs Python 3.11 or newer; '$python' is $("$python" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
    exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "setting up $venv (first run only)..." >&2
    "$python" -m venv "$venv"
fi
stamp="$venv/.installed-$(echo "$extras" | tr ',' '-')"
want="$(cat "$root/setup.cfg" "$root/pyproject.toml" | cksum)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet -e "$root[$extras]" >&2
    echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
