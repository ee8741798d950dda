#!/usr/bin/env bash
# Start one Ray node for the executor's Ray backend (ZX_EXECUTOR_BACKEND=ray): token authentication on,
# every listening port explicit, the node's memory declared, no dashboard. Run it as root (the sandbox
# creates cgroups and tmpfs job folders) on a machine where `make setup` ran (bwrap, setpriv, the venv
# at the same path as on the executor's machine).
#
#   ZX_RAY_TOKEN_FILE=/etc/zehanx/ray-token ZX_RAY_MEMORY_BYTES=$((20<<30)) deploy/ray/start-node.sh head
#   ZX_RAY_TOKEN_FILE=/etc/zehanx/ray-token ZX_RAY_MEMORY_BYTES=$((60<<30)) ZX_RAY_GPUS=1 \
#     deploy/ray/start-node.sh worker 10.0.0.5:6380
#
# Ports (ZX_RAY_PORT_BASE, default 6380; open them only on the cluster's private network):
#   base+0 GCS (head only; the executor's ZX_EXECUTOR_RAY_ADDRESS)   base+5 dashboard agent gRPC
#   base+1 raylet (node manager)                                       base+6 runtime-env agent
#   base+2 object manager                                              base+7 Ray client server (head)
#   base+3 metrics export                                              base+8 dashboard metrics (env)
#   base+4 dashboard agent HTTP                                        base+9 autoscaler metrics (env)
#   base+10 the minimal dashboard process Ray starts even with --include-dashboard false (127.0.0.1)
#   ZX_RAY_WORKER_PORTS (default 20000-20199): one per Ray worker process (and per driver).
# A head that runs no sandboxes: ZX_RAY_SANDBOX=0 (it then does not declare zx_sandbox).
# ZX_RAY_BLOCK=1 keeps it in the foreground (systemd, a container's entrypoint).
set -euo pipefail
cd "$(dirname "$0")/../.."

die() { printf 'start-node: %s\n' "$*" >&2; exit 2; }
role=${1:-}
[[ $role == head || $role == worker ]] || die "usage: $0 head | worker HEAD_HOST:PORT"
token_file=${ZX_RAY_TOKEN_FILE:-}
[[ -n $token_file && -s $token_file ]] || die "ZX_RAY_TOKEN_FILE must name a non-empty file holding the cluster's token (make one: python -c 'import secrets; print(secrets.token_hex(32))' > FILE; chmod 600 FILE)"
memory=${ZX_RAY_MEMORY_BYTES:-}
[[ $memory =~ ^[0-9]+$ ]] || die "ZX_RAY_MEMORY_BYTES must be the memory (bytes) runs on this node may ask for together; Ray would otherwise offer the whole host's"
base=${ZX_RAY_PORT_BASE:-6380}
workers=${ZX_RAY_WORKER_PORTS:-20000-20199}
ray=${RAY:-.venv/bin/ray}

resources='{}'
[[ ${ZX_RAY_SANDBOX:-1} == 1 ]] && resources='{"zx_sandbox": 1}'

export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$token_file RAY_USAGE_STATS_ENABLED=0
export DASHBOARD_METRIC_PORT=$((base + 8)) AUTOSCALER_METRIC_PORT=$((base + 9))
args=(
  --memory "$memory" --resources "$resources" --include-dashboard false --disable-usage-stats
  --node-manager-port $((base + 1)) --object-manager-port $((base + 2)) --metrics-export-port $((base + 3))
  --dashboard-agent-listen-port $((base + 4)) --dashboard-agent-grpc-port $((base + 5))
  --runtime-env-agent-port $((base + 6)) --dashboard-port $((base + 10))
  --min-worker-port "${workers%-*}" --max-worker-port "${workers#*-}"
)
[[ -n ${ZX_RAY_CPUS:-} ]] && args+=(--num-cpus "$ZX_RAY_CPUS")
[[ -n ${ZX_RAY_GPUS:-} ]] && args+=(--num-gpus "$ZX_RAY_GPUS")
[[ -n ${ZX_RAY_OBJECT_STORE_BYTES:-} ]] && args+=(--object-store-memory "$ZX_RAY_OBJECT_STORE_BYTES")
[[ ${ZX_RAY_BLOCK:-0} == 1 ]] && args+=(--block)
if [[ $role == head ]]; then
  exec "$ray" start --head --port "$base" --ray-client-server-port $((base + 7)) "${args[@]}"
fi
[[ -n ${2:-} ]] || die "usage: $0 worker HEAD_HOST:PORT"
exec "$ray" start --address "$2" "${args[@]}"
