# syntax=docker/dockerfile:1
# Zehanx codegen: a prompt and a dataset profile become a plan and a training program.
# Build from the repository root (docker compose does): docker build -f docker/codegen.Dockerfile .
FROM python:3.11-slim

# Every service installs the one pinned distribution, torch included. The CPU build keeps images small;
# GPU hosts build with --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (or similar).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first, so this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install --index-url "${TORCH_INDEX_URL}" "$(grep -E '^torch==' requirements.txt)" \
 && pip install -r requirements.txt

# The repository (generated contracts are committed under gen/python), installed without dependencies.
COPY . .
RUN pip install --no-deps . \
 && useradd --system --uid 10001 --home-dir /var/lib/zehanx --create-home zehanx

USER zehanx
ENV ZX_HOME=/var/lib/zehanx ZX_CODEGEN_HOST=0.0.0.0 ZX_CODEGEN_PORT=47103
EXPOSE 47103
CMD ["zx-codegen"]
