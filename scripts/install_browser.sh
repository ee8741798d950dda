#!/usr/bin/env bash
# Install the browser the dashboard's Playwright tests drive: Debian's chromium (Playwright's own browser
# download needs the internet; the Debian package comes through apt). Idempotent: quick when present.
#
# Exit status: 0 when chromium runs; 1 with a message naming what is missing otherwise.
set -euo pipefail

CHROMIUM="${ZX_CHROMIUM:-/usr/bin/chromium}"

if [[ ! -x "$CHROMIUM" ]]; then
  if [[ "$(id -u)" != 0 ]]; then
    echo "install_browser: $CHROMIUM is missing; run this script as root or 'apt-get install chromium' (or set ZX_CHROMIUM)" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: $CHROMIUM is missing and there is no apt-get on this host (set ZX_CHROMIUM to a Chromium binary)" >&2
    exit 1
  fi
  echo "install_browser: installing chromium (apt)"
  export DEBIAN_FRONTEND=noninteractive
  # Try the cached package lists first; refresh them only when that fails.
  if ! apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends chromium >/dev/null
  fi
fi

# Debian's wrapper script prints a harmless shell warning on --version; keep only the version line.
version=$("$CHROMIUM" --version 2>/dev/null | grep -i chromium | head -1 || true)
if [[ -z "$version" ]]; then
  echo "install_browser: $CHROMIUM does not run (--version printed nothing)" >&2
  exit 1
fi
echo "install_browser: ok ($version)"
