"""Internal channels balance over several replicas (round_robin), not only the first address.

Two real gRPC servers on 127.0.0.1 with their own ports stand for two replicas of a service. This host's
DNS cannot give one name two ports (and /etc/hosts maps localhost to 127.0.0.1 alone), so the test names
both with gRPC's static ``ipv4:`` resolver: what it shows is that the channel's load-balancing policy is
round_robin (with gRPC's default, pick_first, every call goes to the first server). A ``dns:///`` target
gives the same policy the addresses DNS returns (a Kubernetes headless Service: one A record per pod);
the second test checks that such a target works through the same channel.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
from zehanx_runtime.client import internal_channel

METHOD = "/zx.test.Who/Am"


async def _replica(name: str, calls: Counter[str]) -> tuple[grpc.aio.Server, int]:
    async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        calls[name] += 1
        return name.encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "zx.test.Who", {"Am": grpc.unary_unary_rpc_method_handler(who)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[Counter[str], list[int]]]:
    calls: Counter[str] = Counter()
    started = [await _replica("a", calls), await _replica("b", calls)]
    try:
        yield calls, [port for _, port in started]
    finally:
        for server, _ in started:
            await server.stop(None)


async def _call(channel: grpc.aio.Channel) -> str:
    answer = await channel.unary_unary(METHOD)(b"", timeout=5, wait_for_ready=True)
    return answer.decode()


async def test_two_replicas_behind_one_target_both_receive_calls(replicas) -> None:
    calls, (one, two) = replicas
    channel = internal_channel(f"ipv4:127.0.0.1:{one},127.0.0.1:{two}")
    try:
        answers = [await _call(channel) for _ in range(20)]
    finally:
        await channel.close()
    # round_robin: alternating once both subchannels are ready (the first calls may all go to whichever
    # connected first); pick_first would send all 20 to one.
    assert calls["a"] >= 5 and calls["b"] >= 5, calls
    assert sum(calls.values()) == 20 and set(answers) == {"a", "b"}


async def test_a_dns_target_reaches_the_service(replicas) -> None:
    calls, (one, _two) = replicas
    channel = internal_channel(f"dns:///127.0.0.1:{one}")
    try:
        assert [await _call(channel) for _ in range(3)] == ["a", "a", "a"]
    finally:
        await channel.close()
    assert calls["a"] == 3
