#!/usr/bin/env bash
# Install what the executor's local sandbox needs. Idempotent and quick when everything is present.
#
#   bubblewrap  (bwrap)     namespaces + bind mounts; installed through apt-get when missing and root
#   util-linux  (setpriv, prlimit)  drop to the sandbox uid, set rlimits before exec'ing bwrap
#   libseccomp2             loaded by pyseccomp (pinned in requirements.txt) to build the seccomp filter
#
# Exit status: 0 when the host has everything; 1 with a message naming what is missing otherwise.
set -euo pipefail

PYTHON="${PYTHON:-.venv/bin/python}"
missing_pkgs=()

command -v bwrap >/dev/null 2>&1 || missing_pkgs+=(bubblewrap)
command -v setpriv >/dev/null 2>&1 || missing_pkgs+=(util-linux)
command -v prlimit >/dev/null 2>&1 || missing_pkgs+=(util-linux)
if ! ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2'; then
  missing_pkgs+=(libseccomp2)
fi

if ((${#missing_pkgs[@]})); then
  # de-duplicate (util-linux may be listed twice)
  mapfile -t missing_pkgs < <(printf '%s\n' "${missing_pkgs[@]}" | sort -u)
  if [[ "$(id -u)" != 0 ]]; then
    echo "install_sandbox_deps: missing ${missing_pkgs[*]}; run this script as root or install them" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_sandbox_deps: missing ${missing_pkgs[*]} and there is no apt-get on this host" >&2
    exit 1
  fi
  echo "install_sandbox_deps: installing ${missing_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Try the cached package lists first; refresh them only when that fails.
  if ! apt-get install -y -q --no-install-recommends "${missing_pkgs[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing_pkgs[@]}" >/dev/null
  fi
fi

for tool in bwrap setpriv prlimit; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "install_sandbox_deps: $tool still missing after install" >&2
    exit 1
  }
done

if [[ -x "$PYTHON" ]]; then
  if ! "$PYTHON" -c 'import pyseccomp; pyseccomp.SyscallFilter(pyseccomp.ALLOW)' 2>/dev/null; then
    echo "install_sandbox_deps: pyseccomp cannot load libseccomp (pip install -r requirements.txt?)" >&2
    exit 1
  fi
fi

echo "install_sandbox_deps: ok ($(bwrap --version), libseccomp $(ldconfig -p | grep -o 'libseccomp\.so\.[0-9.]*' | head -1))"
