#!/usr/bin/env bash
# Installs the pinned stack into a Python virtual environment.
# Shared by every install path: the native venv and the root filesystem (tools/runtime.py)
# and the Dockerfile, so all of them get identical versions.
#
# Usage: install_stack.sh VENV_DIR LOCK_FILE
set -euo pipefail
venv=${1:?usage: install_stack.sh VENV_DIR LOCK_FILE}
lock=${2:?usage: install_stack.sh VENV_DIR LOCK_FILE}

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# --no-deps: the lock already lists every transitive package; nothing may float.
"$venv/bin/python" -m pip install --quiet --no-input --no-deps --require-virtualenv -r "$lock"
"$venv/bin/python" -m pip check
