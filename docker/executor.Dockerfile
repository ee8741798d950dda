# syntax=docker/dockerfile:1
# Zehanx executor: runs untrusted training code in a local sandbox (namespaces via bubblewrap, cgroups,
# seccomp, no network). Build from the repository root: docker build -f docker/executor.Dockerfile .
# It runs as root inside its container because building a sandbox needs it; every job runs as an
# unprivileged uid. docker-compose.yml grants the container the few privileges that takes.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# The sandbox's tools: bwrap (namespaces, bind mounts), setpriv/prlimit (uid drop, rlimits), libseccomp.
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap util-linux libseccomp2 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first, so this layer is rebuilt only when requirements.txt changes. torch is here
# because the programs the executor runs import it from the read-only runtime it exposes.
COPY requirements.txt ./
RUN pip install --index-url "${TORCH_INDEX_URL}" "$(grep -E '^torch==' requirements.txt)" \
 && pip install -r requirements.txt

COPY . .
RUN pip install --no-deps .

ENV ZX_HOME=/var/lib/zehanx ZX_EXECUTOR_HOST=0.0.0.0 ZX_EXECUTOR_PORT=47104
EXPOSE 47104
CMD ["zx-executor"]
