#!/usr/bin/env bash
# Optional: promtool (Prometheus' rule and configuration checker), for the test that validates
# deploy/observability/ with it. Takes the binary out of Debian's prometheus package into .venv/bin
# (apt-get download + dpkg-deb: nothing is installed system-wide, no Prometheus server is started, no
# root needed). Idempotent: nothing to do when promtool is on PATH or already in .venv/bin.
#
# Never fails set-up: without apt (or the package lists, or the network) it says so and exits 0; the
# test then checks the rules by parsing them and says promtool was absent.
set -uo pipefail

DEST="${VENV:-.venv}/bin/promtool"

if command -v promtool >/dev/null 2>&1 || [[ -x "$DEST" ]]; then
  exit 0
fi
skip() {
  echo "install_promtool: skipped ($1); the observability test will check the alert rules without promtool" >&2
  exit 0
}
command -v apt-get >/dev/null 2>&1 || skip "no apt-get on this host"
command -v dpkg-deb >/dev/null 2>&1 || skip "no dpkg-deb on this host"
work=$(mktemp -d) || skip "no temporary directory"
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q prometheus >/dev/null 2>&1) || skip "apt-get download prometheus failed"
deb=$(ls "$work"/prometheus_*.deb 2>/dev/null | head -1)
[[ -n "$deb" ]] || skip "no prometheus package downloaded"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" ./usr/bin/promtool 2>/dev/null || skip "no promtool in $deb"
install -m 0755 "$work/usr/bin/promtool" "$DEST" || skip "could not write $DEST"
"$DEST" --version >/dev/null 2>&1 || { rm -f "$DEST"; skip "promtool from $deb does not run here"; }
echo "install_promtool: ok ($("$DEST" --version 2>&1 | head -1))"
