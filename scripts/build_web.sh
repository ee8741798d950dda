#!/usr/bin/env bash
# Build the web dashboard (web/) the gateway's edge serves:
#   1. the TypeScript client of the public API from protos/ (protoc-gen-es through grpcio-tools' protoc)
#      into web/src/gen/ (git-ignored: generated here, never committed);
#   2. esbuild bundles web/src/main.ts into web/dist/app.js, next to index.html and app.css from web/static/.
# Skipped when a stamp of its inputs (protos/, web/src outside gen, web/static, package-lock.json, this
# script) matches the last build. Offline: only what make setup installed (.venv, node_modules).
#
#   scripts/build_web.sh           build when inputs changed (make setup runs this)
#   scripts/build_web.sh --force   build anyway
#   scripts/build_web.sh --check   also type-check (tsc --noEmit, strict); the tests run this
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
BIN=node_modules/.bin
say() { printf 'build_web: %s\n' "$*"; }
die() { printf 'build_web: error: %s\n' "$*" >&2; exit 1; }

force=0 check=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --check) check=1 ;;
    *) die "unknown argument $arg (use --force or --check)" ;;
  esac
done

[[ -x "$PY" ]] || die "$PY missing: run make setup"
[[ -x "$BIN/esbuild" && -x "$BIN/protoc-gen-es" ]] || die "node_modules missing: run make setup (npm install)"
[[ -f protos/build/buf/validate/validate.proto ]] || "$PY" scripts/gen_protos.py --deps-only >/dev/null

inputs_key() {
  {
    find protos/zehanx protos/build web/static web/src web/tsconfig.json package-lock.json scripts/build_web.sh \
      -path web/src/gen -prune -o -type f -print 2>/dev/null | LC_ALL=C sort | xargs sha256sum
  } | sha256sum | cut -d' ' -f1
}

stamp=web/dist/.zx-build.sha256
key=$(inputs_key)
if [[ $force == 0 && -f web/dist/app.js && -d web/src/gen && "$(cat "$stamp" 2>/dev/null)" == "$key" ]]; then
  say "web/dist up to date"
else
  started=$(date +%s.%N)
  # The public API (gateway/v1) and what it imports (common/v1, buf/validate, google/api, google/rpc);
  # google/protobuf's well-known types come from @bufbuild/protobuf/wkt.
  rm -rf web/src/gen web/dist
  mkdir -p web/src/gen web/dist
  protos=($(cd protos && echo zehanx/gateway/v1/*.proto zehanx/common/v1/*.proto) buf/validate/validate.proto
          google/api/field_behavior.proto google/rpc/status.proto)
  (cd protos && ../"$PY" -m grpc_tools.protoc -I. -Ibuild \
      --plugin=protoc-gen-es=../"$BIN"/protoc-gen-es --es_out=../web/src/gen --es_opt=target=ts "${protos[@]}")
  "$BIN"/esbuild web/src/main.ts --bundle --minify --format=iife --target=es2020 \
      --outfile=web/dist/app.js --log-level=warning
  cp web/static/index.html web/static/app.css web/dist/
  echo "$key" >"$stamp"
  say "built web/dist in $(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')s ($(stat -c %s web/dist/app.js) B app.js)"
fi

if [[ $check == 1 ]]; then
  "$BIN"/tsc --noEmit -p web/tsconfig.json
  say "tsc --noEmit (strict) passed"
fi
