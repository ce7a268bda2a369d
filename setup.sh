#!/usr/bin/env bash
# Set up (and, as root with systemd, install as a service) the Civitai download daemon.
# A friendly front for install.py: every option is passed on (see: python3 install.py --help).
set -uo pipefail
cd "$(dirname "$0")"

step() { printf '\n\033[1m[%s] %s\033[0m\n' "$1" "$2"; }
ok() { printf '    \033[32mok\033[0m %s\n' "$1"; }
fail() { printf '    \033[31mfailed:\033[0m %s\n' "$1" >&2; exit 1; }

step 1/3 "Looking for Python 3.11 or newer"
PY=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        PY=$(command -v "$candidate")
        break
    fi
done
[ -n "$PY" ] || fail "no Python 3.11+ found. Install it (Debian/Ubuntu: sudo apt install python3) and run ./setup.sh again."
ok "$PY ($("$PY" --version 2>&1))"

step 2/3 "Installing uv, the dependencies and the home (install.py)"
if [ "$(id -u)" -eq 0 ]; then
    ok "running as root: a systemd service will be installed where systemd runs"
else
    ok "not root: the daemon will start in this terminal (sudo ./setup.sh installs a service)"
fi

step 3/3 "Running install.py $*"
"$PY" install.py "$@" || fail "install.py stopped; the message above says why. Fix it and run ./setup.sh again (it is safe to re-run)."
