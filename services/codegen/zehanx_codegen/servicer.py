"""CodegenService over gRPC: convert in, call the domain (in a worker thread: planning and rendering
are quick, but a Groq call blocks for seconds), convert out."""

from __future__ import annotations

import asyncio
import functools

import grpc
from zehanx.codegen.v1 import codegen_service_pb2 as pb
from zehanx.codegen.v1 import codegen_service_pb2_grpc as rpc
from zehanx_runtime import provider_keys

from zehanx_codegen import convert
from zehanx_codegen.schema import apply_schema
from zehanx_codegen.service import Codegen

SERVICE_NAME = "zehanx.codegen.v1.CodegenService"


def _groq_key(context: grpc.aio.ServicerContext | None) -> str | None:
    """The job owner's own Groq key, when the gateway sent one with this call."""
    if context is None:
        return None
    return provider_keys.caller_key(context.invocation_metadata(), provider_keys.GROQ_KEY)


class CodegenServicer(rpc.CodegenServiceServicer):
    def __init__(self, codegen: Codegen) -> None:
        self.codegen = codegen

    async def PlanTask(
        self, request: pb.PlanTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlanTaskResponse:
        profile = apply_schema(convert.profile(request.profile), request.schema_json)
        plan = await asyncio.to_thread(
            self.codegen.plan,
            request.prompt,
            profile,
            target_hint=request.target_column_hint or None,
            task_hint=convert.family(request.task_hint),
        )
        return pb.PlanTaskResponse(plan=convert.plan_pb(plan), backend="template")

    async def GenerateProgram(
        self, request: pb.GenerateProgramRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateProgramResponse:
        profile = apply_schema(convert.profile(request.profile), request.schema_json)
        generated = await asyncio.to_thread(
            functools.partial(self.codegen.generate, groq_api_key=_groq_key(context)),
            request.prompt,
            convert.plan(request.plan),
            profile,
        )
        return pb.GenerateProgramResponse(
            program=convert.program_pb(generated.program),
            validation=convert.report_pb(generated.validation),
            backend=generated.backend,
        )

    async def RepairProgram(
        self, request: pb.RepairProgramRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepairProgramResponse:
        profile = None
        if request.HasField("profile"):
            profile = apply_schema(convert.profile(request.profile), request.schema_json)
        repaired = await asyncio.to_thread(
            functools.partial(self.codegen.repair, groq_api_key=_groq_key(context)),
            convert.program(request.program),
            convert.plan(request.plan),
            convert.failure(request.error),
            request.attempt,
            profile,
        )
        return pb.RepairProgramResponse(
            program=convert.program_pb(repaired.program),
            change_summary=repaired.change_summary,
            changed_paths=list(repaired.changed_paths),
            validation=convert.report_pb(repaired.validation),
            backend=repaired.backend,
        )
