"""A user's own provider keys on internal calls: the metadata names the gateway sends them under.

The gateway's orchestrator sends a job owner's key only to the service that uses it (Groq: codegen;
Firecrawl: crawler; E2B: trainer, which hands it on to the executor). That service uses it for that
call instead of its configured key. Keys are secrets: never log them, never put them in a sandbox.
"""

from __future__ import annotations

from collections.abc import Iterable

GROQ_KEY = "x-zx-groq-api-key"
FIRECRAWL_KEY = "x-zx-firecrawl-api-key"
E2B_KEY = "x-zx-e2b-api-key"


def caller_key(metadata: Iterable[tuple[str, str | bytes]] | None, name: str) -> str | None:
    """The key sent under ``name`` in a call's invocation metadata, if any."""
    for key, value in metadata or ():
        if key == name and isinstance(value, str) and value.strip():
            return value.strip()
    return None
