"""The Groq writer against recorded response shapes (Groq is unreachable from here): a good reply,
``json_validate_failed``, a retired model, rate limiting, a program that fails the static checks,
and a repair prompt. The SDK runs for real; only its HTTP transport is replaced."""

from __future__ import annotations

import json
from collections.abc import Callable

import groq
import httpx
import pytest
from zehanx_codegen.app import build_codegen
from zehanx_codegen.domain import ProgramFailure, ProgramPhase
from zehanx_codegen.service import Codegen
from zehanx_codegen.settings import CodegenSettings
from zehanx_runtime.errors import FailedPrecondition, Unavailable

MODELS = ["openai/gpt-oss-120b", "openai/gpt-oss-20b"]


def completion(content: str, model: str = MODELS[0], finish_reason: str = "stop") -> dict:
    """The shape of a Groq chat.completion (recorded, ids shortened)."""
    return {
        "id": "chatcmpl-4c1f0e2b", "object": "chat.completion", "created": 1760000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None,
                     "finish_reason": finish_reason}],
        "usage": {"queue_time": 0.05, "prompt_tokens": 4120, "prompt_time": 0.2, "completion_tokens": 2900,
                  "completion_time": 6.1, "total_tokens": 7020, "total_time": 6.3},
        "system_fingerprint": "fp_a1b2c3", "x_groq": {"id": "req_01k0abcd"}, "service_tier": "on_demand",
    }  # fmt: skip


DECOMMISSIONED = {"error": {
    "message": "The model `openai/gpt-oss-120b` has been decommissioned and is no longer supported. Please refer "
               "to https://console.groq.com/docs/deprecations for a recommendation on which model to use instead.",
    "type": "invalid_request_error", "code": "model_decommissioned"}}  # fmt: skip
JSON_FAILED = {"error": {
    "message": "Failed to generate JSON. Please adjust your prompt. See 'failed_generation' for more details.",
    "type": "invalid_request_error", "code": "json_validate_failed",
    "failed_generation": '{"files": [{"path": "train.py", "content": "import zxrt\\n'}}  # fmt: skip
RATE_LIMITED = {"error": {
    "message": "Rate limit reached for model `openai/gpt-oss-120b` in organization `org_01` service tier "
               "`on_demand` on tokens per minute (TPM): Limit 8000, Used 7650, Requested 4120. Please try again "
               "in 28.2s.", "type": "tokens", "code": "rate_limit_exceeded"}}  # fmt: skip


class Recorder:
    """Answers each request with the next recorded (status, body, headers) and keeps the requests."""

    def __init__(self, answers: list[tuple[int, dict, dict]]) -> None:
        self.answers = list(answers)
        self.requests: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/chat/completions")
        assert request.headers["authorization"] == "Bearer gsk_test"
        self.requests.append(json.loads(request.content))
        status, body, headers = self.answers.pop(0)
        return httpx.Response(status, json=body, headers=headers)


def groq_codegen(recorder: Callable[[httpx.Request], httpx.Response]) -> Codegen:
    client = groq.Groq(
        api_key="gsk_test", http_client=httpx.Client(transport=httpx.MockTransport(recorder)), max_retries=0
    )
    settings = CodegenSettings(backend="groq", groq_models=MODELS, allow_pretrained_encoder=False)
    return build_codegen(settings, groq_client=client)


def program_reply(codegen: Codegen, plan, **changes: str) -> str:
    """What a well-behaved model returns: the reference program (optionally edited) as JSON."""
    files = dict(codegen.templates.generate(plan).files, **changes)
    return json.dumps({"files": [{"path": p, "content": t} for p, t in files.items()],
                       "summary": "An MLP over standardised measurements and one-hot island and sex."})  # fmt: skip


@pytest.fixture
def penguin_plan(codegen: Codegen, penguins):
    return codegen.plan("predict the species of a penguin", penguins.profile)


def test_a_good_reply_becomes_a_validated_program(codegen: Codegen, penguins, penguin_plan) -> None:
    recorder = Recorder([(200, completion(program_reply(codegen, penguin_plan)), {})])
    generated = groq_codegen(recorder).generate("predict the species", penguin_plan, penguins.profile)
    assert generated.backend == "groq:openai/gpt-oss-120b" and generated.validation.passed
    assert set(generated.program.files) == {"train.py", "predict.py", "features.py", "model.py"}
    sent = recorder.requests[0]
    assert sent["model"] == MODELS[0] and sent["response_format"] == {"type": "json_object"}
    assert "zxrt.save_model" in sent["messages"][0]["content"]  # the contract travels in the system prompt
    assert "species" in sent["messages"][1]["content"] and "--- train.py" in sent["messages"][1]["content"]


def test_json_validate_failed_is_retried_then_the_next_model_is_used(codegen, penguins, penguin_plan) -> None:
    reply = program_reply(codegen, penguin_plan)
    recorder = Recorder(
        [(400, JSON_FAILED, {}), (400, JSON_FAILED, {}), (200, completion(reply, MODELS[1]), {})]
    )
    generated = groq_codegen(recorder).generate("predict the species", penguin_plan, penguins.profile)
    assert [r["model"] for r in recorder.requests] == [MODELS[0], MODELS[0], MODELS[1]]
    assert generated.backend == "groq:openai/gpt-oss-20b"


def test_a_retired_model_falls_through_and_all_retired_is_failed_precondition(codegen, penguin_plan) -> None:
    reply = program_reply(codegen, penguin_plan)
    recorder = Recorder([(404, DECOMMISSIONED, {}), (200, completion(reply, MODELS[1]), {})])
    assert groq_codegen(recorder).generate("p", penguin_plan).backend == "groq:openai/gpt-oss-20b"
    with pytest.raises(FailedPrecondition) as caught:
        groq_codegen(Recorder([(404, DECOMMISSIONED, {}), (404, DECOMMISSIONED, {})])).generate(
            "p", penguin_plan
        )
    assert caught.value.reason == "MODEL_RETIRED" and "ZX_CODEGEN_GROQ_MODELS" in caught.value.message


def test_rate_limiting_is_unavailable_with_the_retry_after(penguin_plan) -> None:
    recorder = Recorder([(429, RATE_LIMITED, {"retry-after": "29"})])
    with pytest.raises(Unavailable) as caught:
        groq_codegen(recorder).generate("p", penguin_plan)
    assert caught.value.reason == "RATE_LIMITED" and caught.value.metadata["retry_after_s"] == "29"


def test_a_reply_that_is_not_a_program_is_a_clear_failure(penguin_plan) -> None:
    not_program = completion(json.dumps({"answer": "Here is your model!"}))
    recorder = Recorder([(200, not_program, {})] * 4)
    with pytest.raises(FailedPrecondition) as caught:
        groq_codegen(recorder).generate("p", penguin_plan)
    assert caught.value.reason == "BAD_REPLY" and '"files"' in caught.value.message


def test_an_unsafe_program_gets_one_more_round_then_is_refused(codegen, penguin_plan) -> None:
    unsafe = program_reply(
        codegen, penguin_plan, **{"model.py": "import subprocess\nsubprocess.run(['curl'])\n"}
    )
    recorder = Recorder([(200, completion(unsafe), {}), (200, completion(unsafe), {})])
    with pytest.raises(FailedPrecondition) as caught:
        groq_codegen(recorder).generate("p", penguin_plan)
    assert caught.value.reason == "PROGRAM_INVALID" and "no_subprocess" in caught.value.message
    follow_up = recorder.requests[1]["messages"][-1]["content"]
    assert "static checks" in follow_up and "subprocess" in follow_up

    fixed = program_reply(codegen, penguin_plan)
    recorder = Recorder([(200, completion(unsafe), {}), (200, completion(fixed), {})])
    assert groq_codegen(recorder).generate("p", penguin_plan).validation.passed


def test_repair_sends_the_failure_and_returns_the_fixed_program(codegen, penguin_plan) -> None:
    good = codegen.templates.generate(penguin_plan)
    broken = dict(good.files, **{"train.py": good.files["train.py"].replace("encode(", "encode_rows(", 1)})
    from zehanx_codegen.domain import Program

    failure = ProgramFailure(ProgramPhase.DATA_LOADING, "NameError", "name 'encode_rows' is not defined",
                             "Traceback ...\nNameError: name 'encode_rows' is not defined", "train.py", 131)  # fmt: skip
    recorder = Recorder([(200, completion(program_reply(codegen, penguin_plan)), {})])
    repaired = groq_codegen(recorder).repair(Program(files=broken), penguin_plan, failure, attempt=2)
    assert repaired.changed_paths == ("train.py",) and repaired.validation.passed
    asked = recorder.requests[0]["messages"][1]["content"]
    assert "attempt 2 of 3" in asked and "encode_rows" in asked and "train.py:131" in asked
