#!/usr/bin/env bash
# Set up a development checkout: .venv (Python 3.11) with the pinned dependencies, the project installed
# editable (zx, zx-<service>), the executor's sandbox tools, the Node tooling, and the generated code
# when it is missing. Idempotent: each step is skipped when a stamp says its inputs have not changed.
#
#   scripts/setup.sh            (make setup runs this)
#   PYTHON311=/path/to/python3.11 scripts/setup.sh   to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s.%N)
VENV=.venv
say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
digest() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }
is_py311() { [[ -x "$1" ]] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; }

find_python311() {
  local candidate
  if [[ -n "${PYTHON311:-}" ]]; then
    is_py311 "$PYTHON311" || die "PYTHON311=$PYTHON311 is not a working Python 3.11"
    echo "$PYTHON311"
    return
  fi
  candidate=$(command -v python3.11 || true)
  if [[ -n "$candidate" ]] && is_py311 "$candidate"; then
    echo "$candidate"
    return
  fi
  for candidate in $(ls -d "$HOME"/.pyenv/versions/3.11*/bin/python 2>/dev/null | sort -V -r); do
    if is_py311 "$candidate"; then
      echo "$candidate"
      return
    fi
  done
  die "Python 3.11 not found (tried python3.11 and ~/.pyenv/versions/3.11*/bin/python). Install it (e.g. apt-get install python3.11 python3.11-venv, or pyenv install 3.11) or set PYTHON311=/path/to/python3.11"
}

# 1. The virtual environment.
if ! is_py311 "$VENV/bin/python"; then
  python=$(find_python311)
  [[ -e "$VENV" ]] && { say "replacing $VENV (not a working Python 3.11)"; rm -rf "$VENV"; }
  say "creating $VENV with $python"
  "$python" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# 2. Pinned dependencies, only when requirements changed (the stamp holds their hash).
req_files=(requirements.txt)
[[ -f requirements.lock ]] && req_files+=(requirements.lock)
req_key=$( { digest "${req_files[@]}"; "$PY" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
req_stamp="$VENV/.zx-requirements.sha256"
if [[ "$(cat "$req_stamp" 2>/dev/null)" != "$req_key" ]]; then
  say "installing pinned dependencies (${req_files[*]})"
  constraints=()
  [[ -f requirements.lock ]] && constraints=(-c requirements.lock)
  "$PY" -m pip install -q -r requirements.txt "${constraints[@]}"
  echo "$req_key" >"$req_stamp"
else
  say "dependencies up to date"
fi

# 3. The project itself, editable. Re-installed when pyproject.toml or the set of top-level packages
#    changes (the editable finder maps packages at install time).
pkg_key=$( { digest pyproject.toml; ls -d gen/python/*/ runtime/*/ services/*/*/ cli/*/ 2>/dev/null; } | sha256sum | cut -d' ' -f1)
pkg_stamp="$VENV/.zx-project.sha256"
if [[ "$(cat "$pkg_stamp" 2>/dev/null)" != "$pkg_key" || ! -x "$VENV/bin/zx" ]]; then
  say "installing the project (editable)"
  "$PY" -m pip install -q -e . --no-deps
  echo "$pkg_key" >"$pkg_stamp"
else
  say "project install up to date"
fi

# 4. The executor's sandbox tools (bubblewrap, setpriv, prlimit, libseccomp).
if [[ -x scripts/install_sandbox_deps.sh ]]; then
  PYTHON="$PY" scripts/install_sandbox_deps.sh
fi

# 4b. The browser the dashboard's tests drive (Debian's chromium through apt).
if [[ -x scripts/install_browser.sh ]]; then
  scripts/install_browser.sh
fi

# 4c. Optional: promtool (Debian's prometheus package, the binary only, into .venv/bin) for the test
#     that validates deploy/observability/; never fails set-up (the test then says it was absent).
if [[ -x scripts/install_promtool.sh ]]; then
  VENV="$VENV" scripts/install_promtool.sh
fi

# 5. Node tooling (buf, the Node gRPC client test, the web app's build tools), when the lock file changed.
if [[ -f package-lock.json ]]; then
  command -v npm >/dev/null 2>&1 || die "npm not found: install Node.js 20+ (buf and the Node client test need it)"
  node_key=$(digest package-lock.json)
  node_stamp=node_modules/.zx-package-lock.sha256
  if [[ "$(cat "$node_stamp" 2>/dev/null)" != "$node_key" ]]; then
    say "installing Node tooling (npm install)"
    npm install --no-audit --no-fund --loglevel=error
    echo "$node_key" >"$node_stamp"
  else
    say "Node tooling up to date"
  fi
fi

# 6. Generated code is committed; generate it only when it is missing (make test checks freshness).
#    protos/build/ (third-party imports for buf and Node) is git-ignored and rendered when absent.
if [[ -f scripts/gen_protos.py ]]; then
  if ! compgen -G 'gen/python/zehanx/*/v1/*_pb2.py' >/dev/null; then
    say "generating gen/python from protos/"
    "$PY" scripts/gen_protos.py
  elif [[ ! -d protos/build/buf ]]; then
    "$PY" scripts/gen_protos.py --deps-only >/dev/null
  fi
fi

# 7. The web dashboard (web/dist) the gateway's edge serves; skipped when its inputs are unchanged.
[[ -x scripts/build_web.sh ]] && scripts/build_web.sh

say "done in $(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')s"
