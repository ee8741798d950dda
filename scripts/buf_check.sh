#!/usr/bin/env bash
# Lint and format-check the contracts in protos/ with buf (npm @bufbuild/buf; works offline).
# Renders the third-party imports buf needs into protos/build/ first (scripts/gen_protos.py).
set -euo pipefail
cd "$(dirname "$0")/.."

BUF=node_modules/.bin/buf
PYTHON=${PYTHON:-.venv/bin/python}
if [[ ! -x "$BUF" ]]; then
  echo "buf_check: $BUF not found; run 'npm install' at the repository root" >&2
  exit 2
fi

"$PYTHON" scripts/gen_protos.py --deps-only >/dev/null
"$BUF" lint protos
"$BUF" format --diff --exit-code protos
echo "buf_check: lint and format clean ($("$BUF" --version))"
