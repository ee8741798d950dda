"""The Groq writer against recorded response shapes (Groq is unreachable from here): a good reply,
``json_validate_failed``, a retired model, rate limiting, a program that fails the static checks,
and a repair prompt. The SDK runs for real; only its HTTP transport is replaced. The error bodies are
Groq's as quoted in public issue threads (cited next to each)."""

from __future__ import annotations

import json
from collections.abc import Callable

import groq
import httpx
import pytest
from zehanx_codegen import groq_backend
from zehanx_codegen.app import build_codegen
from zehanx_codegen.domain import ProgramFailure, ProgramPhase
from zehanx_codegen.service import Codegen
from zehanx_codegen.settings import CodegenSettings
from zehanx_runtime.errors import FailedPrecondition

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


#: Groq answers a decommissioned model with HTTP 400 (atiilla/sqlmap-ai#3: "groq.BadRequestError: Error
#: code: 400 ... model_decommissioned"; also tnahddisttud/nanoagents#1, ItzCrazyKns/Vane#771,
#: continuedev/continue#12741).
DECOMMISSIONED = {"error": {
    "message": "The model `mixtral-8x7b-32768` has been decommissioned and is no longer supported. Please refer "
               "to https://console.groq.com/docs/deprecations for a recommendation on which model to use instead.",
    "type": "invalid_request_error", "code": "model_decommissioned"}}  # fmt: skip
#: ... and a model it does not know with 404 model_not_found (the SDK's NotFoundError, groq/_client.py:245).
NOT_FOUND = {"error": {
    "message": "The model `openai/gpt-oss-9000` does not exist or you do not have access to it.",
    "type": "invalid_request_error", "code": "model_not_found"}}  # fmt: skip
#: A request larger than the plan's tokens per minute: HTTP 413 (autohandai/code-cli#302 for gpt-oss-120b,
#: "Limit 8000, Requested 34041"; the body's shape from HunorLaczko/ha-groq-cloud-api#27 and
#: cottongeeks/podscript#20: type "tokens", code "rate_limit_exceeded"). The SDK has no class for 413
#: (groq/_client.py:236-259) and does not retry it (groq/_base_client.py:775-808).
TOO_LARGE = {"error": {
    "message": "Request too large for model `openai/gpt-oss-120b` in organization `org_01` service tier "
               "`on_demand` on tokens per minute (TPM): Limit 8000, Requested 20211, please reduce your message "
               "size and try again. Need more tokens? Upgrade to Dev Tier today at "
               "https://console.groq.com/settings/billing",
    "type": "tokens", "code": "rate_limit_exceeded"}}  # fmt: skip
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
        assert request.headers["authorization"].startswith("Bearer gsk_")
        self.requests.append(json.loads(request.content))
        status, body, headers = self.answers.pop(0)
        return httpx.Response(status, json=body, headers=headers)


def groq_codegen(
    recorder: Callable[[httpx.Request], httpx.Response], *, max_retries: int = 0, **settings: object
) -> Codegen:
    client = groq.Groq(
        api_key="gsk_test",
        http_client=httpx.Client(transport=httpx.MockTransport(recorder)),
        max_retries=max_retries,
    )
    configured = CodegenSettings(
        **{"backend": "groq", "groq_models": MODELS, "allow_pretrained_encoder": False, **settings}
    )
    return build_codegen(configured, groq_client=client)


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
    assert sent["model"] == MODELS[0] and sent["response_format"]["type"] == "json_schema"
    assert "zxrt.save_model" in sent["messages"][0]["content"]  # the contract travels in the system prompt
    assert "species" in sent["messages"][1]["content"] and "--- train.py" in sent["messages"][1]["content"]


def test_a_reply_lists_only_the_files_it_changes_and_the_rest_are_kept(
    codegen, penguins, penguin_plan
) -> None:
    # The reply need not repeat the program: on a Free-plan key (8000 tokens per minute) the prompt
    # and a whole second copy of the program do not fit together.
    reference = codegen.templates.generate(penguin_plan, prompt="predict the species")
    changed = reference.files["model.py"].replace("nn.ReLU()", "nn.GELU()")
    only_model = json.dumps({"files": [{"path": "model.py", "content": changed}], "summary": "GELU."})
    recorder = Recorder([(200, completion(only_model), {})])
    generated = groq_codegen(recorder).generate("predict the species", penguin_plan, penguins.profile)
    assert generated.program.files == dict(reference.files, **{"model.py": changed})
    assert (
        generated.validation.passed
        and "list only the files you change" in recorder.requests[0]["messages"][1]["content"]
    )

    recorder = Recorder(
        [(200, completion(json.dumps({"files": [], "summary": "It is right as it is."})), {})]
    )
    kept = groq_codegen(recorder).generate("predict the species", penguin_plan, penguins.profile)
    assert kept.program.files == reference.files and kept.backend == "groq:openai/gpt-oss-120b"


def test_json_validate_failed_is_retried_then_the_next_model_is_used(codegen, penguins, penguin_plan) -> None:
    reply = program_reply(codegen, penguin_plan)
    recorder = Recorder(
        [(400, JSON_FAILED, {}), (400, JSON_FAILED, {}), (200, completion(reply, MODELS[1]), {})]
    )
    generated = groq_codegen(recorder).generate("predict the species", penguin_plan, penguins.profile)
    assert [r["model"] for r in recorder.requests] == [MODELS[0], MODELS[0], MODELS[1]]
    assert generated.backend == "groq:openai/gpt-oss-20b"


def test_a_decommissioned_model_400_falls_through_to_the_next_model(codegen, penguin_plan) -> None:
    reply = program_reply(codegen, penguin_plan)
    recorder = Recorder([(400, DECOMMISSIONED, {}), (200, completion(reply, MODELS[1]), {})])
    models = ["mixtral-8x7b-32768", MODELS[1]]
    generated = groq_codegen(recorder, groq_models=models).generate("p", penguin_plan)
    assert generated.backend == "groq:openai/gpt-oss-20b"
    assert [r["model"] for r in recorder.requests] == models


def test_a_retired_or_unknown_model_falls_through_and_all_retired_is_failed_precondition(
    codegen, penguin_plan
) -> None:
    reply = program_reply(codegen, penguin_plan)
    recorder = Recorder([(404, NOT_FOUND, {}), (200, completion(reply, MODELS[1]), {})])
    assert groq_codegen(recorder).generate("p", penguin_plan).backend == "groq:openai/gpt-oss-20b"
    recorder = Recorder([(400, DECOMMISSIONED, {}), (404, NOT_FOUND, {})])
    with pytest.raises(FailedPrecondition) as caught:
        groq_codegen(recorder).generate("p", penguin_plan)
    assert caught.value.reason == "MODEL_RETIRED" and "ZX_CODEGEN_GROQ_MODELS" in caught.value.message
    assert len(recorder.requests) == 2


def test_a_request_over_the_plans_tokens_per_minute_is_one_request_and_names_the_limit(penguin_plan) -> None:
    # max_retries=2 as configured by default: the SDK does not retry a 413 either.
    recorder = Recorder([(413, TOO_LARGE, {})] * 3)
    with pytest.raises(FailedPrecondition) as caught:
        groq_codegen(recorder, max_retries=2).generate("p", penguin_plan)
    assert len(recorder.requests) == 1
    error = caught.value
    assert error.reason == "GROQ_TOKEN_LIMIT" and error.metadata["limit"] == "8000"
    assert "tokens per minute (TPM): Limit 8000, Requested 20211" in error.message
    assert "ZX_CODEGEN_BACKEND=template" in error.message  # the job is told how to use the template writer


def test_rate_limiting_waits_only_the_sdks_retries_then_fails_naming_the_limit(
    penguin_plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(groq._base_client.time, "sleep", waits.append)
    # Groq's 429 carries retry-after in seconds (console.groq.com/docs/rate-limits, "Handling Rate
    # Limits"); the SDK waits it when it is at most 60 s (groq/_base_client.py:761), max_retries times.
    recorder = Recorder([(429, RATE_LIMITED, {"retry-after": "29"})] * 4)
    with pytest.raises(FailedPrecondition) as caught:
        groq_codegen(recorder, max_retries=2).generate("p", penguin_plan)
    assert len(recorder.requests) == 3 and waits == [29.0, 29.0]  # 1 + the SDK's 2 retries, nothing more
    error = caught.value
    assert error.reason == "GROQ_RATE_LIMIT" and error.metadata["retry_after_s"] == "29"
    assert "tokens per minute (TPM): Limit 8000, Used 7650, Requested 4120" in error.message
    assert "ZX_CODEGEN_BACKEND=template" in error.message


def test_the_owners_own_key_over_its_limit_is_told_to_remove_the_key(penguins, penguin_plan) -> None:
    recorder = Recorder([(413, TOO_LARGE, {})])
    on_templates = groq_codegen(recorder, backend="template")
    with pytest.raises(FailedPrecondition) as caught:
        on_templates.generate("p", penguin_plan, penguins.profile, groq_api_key="gsk_owner_" + "x" * 40)
    assert len(recorder.requests) == 1 and caught.value.reason == "GROQ_TOKEN_LIMIT"
    assert "the job owner's own Groq key" in caught.value.message
    assert "remove your Groq key" in caught.value.message and "Limit 8000" in caught.value.message


def test_the_requested_completion_fits_the_plans_tokens_per_minute(codegen, penguins, penguin_plan) -> None:
    reply = program_reply(codegen, penguin_plan)
    recorder = Recorder([(200, completion(reply), {})])
    groq_codegen(recorder).generate("predict the species", penguin_plan, penguins.profile)
    sent = recorder.requests[0]
    prompt = groq_backend.estimate_prompt_tokens(sent["messages"])
    # Groq counts prompt + requested max_completion_tokens against TPM (zeeyado/koassistant.koplugin#106).
    assert prompt + sent["max_completion_tokens"] + groq_backend.MARGIN_TOKENS <= 8000
    assert sent["max_completion_tokens"] >= groq_backend.MIN_COMPLETION_TOKENS
    assert prompt * groq_backend.CHARS_PER_TOKEN >= sum(len(m["content"]) for m in sent["messages"])

    recorder = Recorder([(200, completion(reply), {})])
    groq_codegen(recorder, groq_tokens_per_minute=250_000).generate("p", penguin_plan, penguins.profile)
    assert recorder.requests[0]["max_completion_tokens"] == 16_384  # the configured reply, on a paid plan


def test_a_plan_too_small_for_the_prompt_is_refused_before_any_request(penguins, penguin_plan) -> None:
    recorder = Recorder([])
    with pytest.raises(FailedPrecondition) as caught:
        groq_codegen(recorder, groq_tokens_per_minute=4096).generate("p", penguin_plan, penguins.profile)
    assert recorder.requests == [] and caught.value.reason == "GROQ_TOKEN_LIMIT"
    assert "4096 tokens per minute" in caught.value.message
    assert "ZX_CODEGEN_BACKEND=template" in caught.value.message


def test_gpt_oss_gets_strict_json_schema_and_low_reasoning_others_json_mode(codegen, penguin_plan) -> None:
    reply = program_reply(codegen, penguin_plan)
    recorder = Recorder([(200, completion(reply), {})])
    groq_codegen(recorder).generate("p", penguin_plan)
    sent = recorder.requests[0]
    # console.groq.com/docs/structured-outputs: {"type": "json_schema", "json_schema": {"name", "schema",
    # "strict": true}} on openai/gpt-oss-20b and -120b (SDK groq/types/chat/completion_create_params.py:405-443).
    assert sent["response_format"]["type"] == "json_schema"
    spec = sent["response_format"]["json_schema"]
    assert spec["strict"] is True and spec["name"] == "program"
    assert spec["schema"]["required"] == ["files", "summary"]
    assert spec["schema"]["properties"]["files"]["items"]["required"] == ["path", "content"]
    assert sent["reasoning_effort"] == "low"  # SDK groq/types/chat/completion_create_params.py:193
    # What the schema admits is what parse_reply reads.
    groq_backend.parse_reply(json.dumps({"files": [{"path": "train.py", "content": "x"}], "summary": ""}))

    recorder = Recorder([(200, completion(reply, "qwen/qwen3-32b"), {})])
    groq_codegen(recorder, groq_models=["qwen/qwen3-32b"]).generate("p", penguin_plan)
    sent = recorder.requests[0]
    assert sent["response_format"] == {"type": "json_object"} and "reasoning_effort" not in sent


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
