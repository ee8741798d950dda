"""Servicers for capabilities that are not built yet.

Until a service's capability lands, every RPC answers UNIMPLEMENTED with a message naming the issue,
never a made-up result.
"""

from __future__ import annotations

from typing import Any

from zehanx_runtime.errors import Unimplemented


def not_built_servicer(base: type, service_name: str, issue: str) -> Any:
    """An instance of ``base`` (a generated ``XServiceServicer``) whose every RPC is UNIMPLEMENTED."""

    def make(rpc: str) -> Any:
        async def method(self: Any, request: Any, context: Any) -> Any:
            raise Unimplemented(
                f"{service_name}.{rpc} is not built yet ({issue})",
                reason="NOT_BUILT_YET",
                metadata={"rpc": rpc},
            )

        method.__name__ = rpc
        return method

    rpcs = [name for name in vars(base) if not name.startswith("_") and callable(vars(base)[name])]
    cls = type(f"NotBuilt{base.__name__}", (base,), {rpc: make(rpc) for rpc in rpcs})
    return cls()
