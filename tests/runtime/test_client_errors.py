"""A downstream's failed call becomes the caller's domain error in one place (``to_domain_error``).

The errors are real ``AioRpcError``s: built from the statuses the shared interceptor sends
(``to_grpc_status``), and once from a real server on port 0 and a real unreachable address.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from zehanx.crawler.v1 import crawler_service_pb2 as pb
from zehanx.crawler.v1 import crawler_service_pb2_grpc as pb_grpc
from zehanx_runtime import errors
from zehanx_runtime.client import Wording, call_metadata, internal_channel, to_domain_error
from zehanx_runtime.server import start_server
from zehanx_runtime.settings import ServiceSettings
from zehanx_runtime.status import to_grpc_status

ADDRESS = "10.0.0.7:47102"
TOKEN_VARIABLE = "ZX_TRAINER_CRAWLER_TOKEN"


def _failed(err: errors.DomainError) -> grpc.aio.AioRpcError:
    """The error a client sees when the callee's handler raised ``err``."""
    status = to_grpc_status(err, domain="crawler.zehanx")
    return grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata), details=status.details
    )


def _bare(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """A status with no details at all (the transport's own, or a foreign server's)."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def _map(exc: grpc.aio.AioRpcError, **kwargs: Any) -> errors.DomainError:
    return to_domain_error(exc, service="crawler", address=ADDRESS, token_variable=TOKEN_VARIABLE, **kwargs)


def test_invalid_argument_keeps_the_callees_reason_metadata_and_field_violations() -> None:
    sent = errors.InvalidArgument(
        "the sources are bad",
        violations=[errors.FieldViolation("sources[1].url", "not a URL", "url.format")],
        reason="BAD_SOURCE",
        metadata={"count": "2"},
    )
    got = _map(_failed(sent))
    assert type(got) is errors.InvalidArgument
    assert (got.reason, got.message) == ("BAD_SOURCE", "crawler: the sources are bad")
    assert got.metadata == {
        "service": "crawler",
        "address": ADDRESS,
        "code": "INVALID_ARGUMENT",
        "count": "2",
    }
    assert got.violations == [errors.FieldViolation("sources[1].url", "not a URL", "url.format")]


@pytest.mark.parametrize("reason", ["SERVICE_TOKEN_MISSING", "SERVICE_TOKEN_INVALID"])
def test_a_refused_service_token_is_internal_and_names_the_variable_to_set(reason: str) -> None:
    got = _map(_failed(errors.Unauthenticated("service token not accepted", reason=reason)))
    assert type(got) is errors.Internal
    assert got.reason == reason
    assert TOKEN_VARIABLE in got.message and ADDRESS in got.message
    assert "ZX_CRAWLER_SERVICE_TOKEN" in got.message


def test_a_token_refusal_cannot_be_reworded_away_but_a_domain_permission_denial_stays() -> None:
    wording = {grpc.StatusCode.UNAUTHENTICATED: Wording("never used", error=errors.Unavailable)}
    assert type(_map(_bare(grpc.StatusCode.UNAUTHENTICATED, "no"), wording=wording)) is errors.Internal
    denied = _map(_failed(errors.PermissionDenied("10.0.0.1 is private", reason="PRIVATE_ADDRESS")))
    assert type(denied) is errors.PermissionDenied
    assert (denied.reason, denied.message) == ("PRIVATE_ADDRESS", "crawler: 10.0.0.1 is private")
    assert type(_map(_bare(grpc.StatusCode.PERMISSION_DENIED, "token"))) is errors.Internal


def test_unreachable_names_the_address_but_an_answered_unavailable_is_the_callees_words() -> None:
    unreachable = _map(_bare(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"))
    assert type(unreachable) is errors.Unavailable
    assert (
        unreachable.message == f"the crawler at {ADDRESS} is unreachable: failed to connect to all addresses"
    )
    assert unreachable.reason == "CRAWLER_UNAVAILABLE"
    answered = _map(_failed(errors.Unavailable("Firecrawl is down", reason="FIRECRAWL_UNAVAILABLE")))
    assert (answered.message, answered.reason) == ("crawler: Firecrawl is down", "FIRECRAWL_UNAVAILABLE")


# Every error type of the runtime's (services may add their own) but the two of the token rule above.
_SAME = [
    c
    for c in errors.DomainError.__subclasses__()
    if c.__module__ == errors.__name__ and c not in (errors.Unauthenticated, errors.PermissionDenied)
]


@pytest.mark.parametrize("cls", _SAME)
def test_every_error_the_callee_sends_comes_back_as_the_same_type(cls: type[errors.DomainError]) -> None:
    got = _map(_failed(cls("x", reason="WHY")))
    assert (type(got), got.reason) == (cls, "WHY")


def test_codes_without_an_error_of_their_own_are_internal_with_a_service_reason() -> None:
    for code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.OUT_OF_RANGE):
        got = _map(_bare(code, "boom"))
        assert (type(got), got.reason, got.message) == (
            errors.Internal,
            f"CRAWLER_{code.name}",
            "crawler: boom",
        )


def test_a_wording_changes_message_type_and_default_reason_but_not_the_callees_reason() -> None:
    wording = {
        grpc.StatusCode.NOT_FOUND: Wording(
            "{what}: the {service} at {address} no longer has it ({detail})",
            reason="DATASET_MISSING",
            error=errors.FailedPrecondition,
        )
    }
    bare = _map(_bare(grpc.StatusCode.NOT_FOUND, "gone"), wording=wording)
    assert type(bare) is errors.FailedPrecondition
    assert bare.message == f"{{what}}: the crawler at {ADDRESS} no longer has it (gone)"  # other braces stay
    assert bare.reason == "DATASET_MISSING"
    sent = _map(_failed(errors.NotFound("no file", reason="FILE_NOT_FOUND")), wording=wording)
    assert (type(sent), sent.reason) == (errors.FailedPrecondition, "FILE_NOT_FOUND")


def test_a_malformed_status_detail_keeps_the_code_and_message() -> None:
    junk = grpc.aio.Metadata(("grpc-status-details-bin", b"\xff\x00not a status"))
    exc = grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), junk, details="missing")
    got = _map(exc)
    assert (type(got), got.reason, got.message) == (errors.NotFound, "CRAWLER_NOT_FOUND", "crawler: missing")


class _Refusing(pb_grpc.CrawlerServiceServicer):
    async def ListCatalog(self, request: Any, context: Any) -> Any:
        raise errors.InvalidArgument(
            "bad page", violations=[errors.FieldViolation("page_token", "unknown")], reason="BAD_PAGE"
        )


async def test_over_the_wire_a_real_servers_error_and_a_closed_port_map_as_above() -> None:
    running = await start_server(
        ServiceSettings(port=0, service_token="t0ken"),
        [(pb_grpc.add_CrawlerServiceServicer_to_server, _Refusing(), "zehanx.crawler.v1.CrawlerService")],
        service_name="crawler",
    )
    address = f"127.0.0.1:{running.port}"
    channel = internal_channel(address)
    try:
        stub = pb_grpc.CrawlerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListCatalog(pb.ListCatalogRequest(), metadata=call_metadata("t0ken"), timeout=10)
        got = to_domain_error(caught.value, service="crawler", address=address, token_variable="ZX_X_TOKEN")
        assert (type(got), got.reason) == (errors.InvalidArgument, "BAD_PAGE")
        assert [(v.field, v.description) for v in got.violations] == [("page_token", "unknown")]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListCatalog(pb.ListCatalogRequest(), metadata=call_metadata("wrong"), timeout=10)
        refused = to_domain_error(
            caught.value, service="crawler", address=address, token_variable="ZX_X_TOKEN"
        )
        assert (type(refused), refused.reason) == (errors.Internal, "SERVICE_TOKEN_INVALID")
        assert "ZX_X_TOKEN" in refused.message
    finally:
        await channel.close()
        await running.server.stop(None)
    closed = grpc.aio.insecure_channel(address)  # the server is gone: nothing listens there now
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.CrawlerServiceStub(closed).ListCatalog(pb.ListCatalogRequest(), timeout=5)
    finally:
        await closed.close()
    gone = to_domain_error(caught.value, service="crawler", address=address, token_variable="ZX_X_TOKEN")
    assert type(gone) is errors.Unavailable and gone.reason == "CRAWLER_UNAVAILABLE"
    assert address in gone.message
