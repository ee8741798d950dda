"""The online program writer: Groq chat completions (``groq`` SDK), then the same static checks as
templates.

The model names come from settings, first choice first (``openai/gpt-oss-120b``, then
``openai/gpt-oss-20b``; the seed's ``mixtral-8x7b-32768`` and the Llama 3.x models are retired).

Each request is sized to the key's plan: Groq counts the prompt plus the *requested*
``max_completion_tokens`` against the per-minute token limit before it runs anything (8,000 on the
Free plan for gpt-oss), so the completion asked for is what is left of that limit after the prompt's
estimate and a margin, never above the configured longest reply; when not even Groq's smallest useful
reply fits, nothing is sent. gpt-oss models get strict JSON-schema output (the reply's shape is
enforced while decoding) and a low reasoning effort; other models get JSON mode.

What can go wrong, and what happens:

- a model that is retired or unknown (404 ``model_not_found``, 400 ``model_decommissioned``): the
  next model in the list; when none is left, FAILED_PRECONDITION naming them;
- ``json_validate_failed`` (400; the model's reply was not the JSON asked for) or a reply that is not
  a program: once more with the same model, then the next model;
- the request is larger than the plan's tokens per minute (413), or the key is rate limited (429)
  after the SDK's own retries (each waits Groq's retry-after, up to 60 s): FAILED_PRECONDITION
  (GROQ_TOKEN_LIMIT / GROQ_RATE_LIMIT) naming the limit Groq gave and saying how to use the template
  writer instead; the gateway does not retry it;
- unreachable, timed out or a server error: UNAVAILABLE;
- a key the API refuses (401/403): FAILED_PRECONDITION, since retrying cannot help;
- a program that fails the static checks: one more round with the problems listed, then
  FAILED_PRECONDITION with the checks that failed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import groq
from zehanx_runtime.errors import FailedPrecondition, Unavailable
from zehanx_runtime.logging import get_logger

from zehanx_codegen import prompts
from zehanx_codegen.domain import DatasetProfile, Plan, Program, ProgramFailure, ValidationReport
from zehanx_codegen.validator import Validator

_PATH = re.compile(r"^[A-Za-z0-9_.+=@,~-]+(/[A-Za-z0-9_.+=@,~-]+)*$")
#: Paths a program may not ship (the platform provides or reserves them).
_RESERVED = ("zxrt.py",)

log = get_logger("zehanx.codegen.groq")

#: The smallest completion worth asking for: a program (or a fix) plus some reasoning.
MIN_COMPLETION_TOKENS = 1024
#: Characters per token assumed for the prompt (code and JSON run about 3.5-4 on gpt-oss's o200k
#: tokenizer; fewer is the safe side, since an underestimate is a 413).
CHARS_PER_TOKEN = 3.2
#: The chat template's tokens around each message.
TOKENS_PER_MESSAGE = 8
#: Kept free of the per-minute limit for the estimate's error.
MARGIN_TOKENS = 256
#: Models with strict structured outputs, constrained decoding (console.groq.com/docs/structured-outputs,
#: "Supported models": openai/gpt-oss-20b and openai/gpt-oss-120b) and reasoning_effort low/medium/high
#: (SDK groq/types/chat/completion_create_params.py:193).
STRICT_SCHEMA_MODELS = frozenset({"openai/gpt-oss-120b", "openai/gpt-oss-20b"})
#: The reply parse_reply reads, as a strict JSON schema (every property required, nothing else).
REPLY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                "required": ["path", "content"],
                "additionalProperties": False,
            },
        },
        "summary": {"type": "string"},
    },
    "required": ["files", "summary"],
    "additionalProperties": False,
}
#: The limit in Groq's 413/429 text: "... on tokens per minute (TPM): Limit 8000, Requested 20211, ..."
#: or "... (TPM): Limit 8000, Used 7650, Requested 4120. ...".
_LIMIT = re.compile(
    r"on (?P<what>[a-z ]+?) \((?P<unit>[A-Z]+)\): Limit (?P<limit>\d+)(?:, Used (?P<used>\d+))?"
    r"(?:, Requested (?P<requested>\d+))?"
)


class BadReply(Exception):
    """The model's reply is not a program in the JSON shape asked for."""


def parse_reply(content: str | None, base: Program | None = None) -> tuple[Program, str]:
    """``{"files": [{"path", "content"}], "summary"}`` → (program, summary), or BadReply saying why.
    With ``base``, the files listed replace or join base's (an empty list is base unchanged)."""
    if not content:
        raise BadReply("the reply is empty")
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise BadReply(f"the reply is not JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise BadReply('the reply has no "files" list')
    if not data["files"] and base is None:
        raise BadReply('the reply\'s "files" list is empty')
    files: dict[str, str] = {}
    for entry in data["files"]:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("path"), str)
            or not isinstance(entry.get("content"), str)
        ):
            raise BadReply('every file needs a string "path" and "content"')
        path = entry["path"].strip()
        if not _PATH.match(path) or any(part in (".", "..") for part in path.split("/")):
            raise BadReply(f"{path!r} is not a relative path inside the program")
        if path.startswith(("data/", "output/")) or path in _RESERVED:
            continue  # reserved by the platform; the trainer provides zxrt.py
        if path in files:
            raise BadReply(f"{path!r} appears twice")
        if len(entry["content"].encode()) > 1024 * 1024:
            raise BadReply(f"{path!r} is larger than 1 MiB")
        files[path] = entry["content"]
    summary = data.get("summary")
    summary = summary if isinstance(summary, str) else ""
    if base is not None:
        files = {**base.files, **files}
    return Program(files=files), summary[:2000]


def _error_code(exc: groq.APIStatusError) -> str:
    body: Any = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("code") or inner.get("type") or "")
    return ""


def _error_text(exc: groq.APIStatusError) -> str:
    body: Any = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
    return exc.message


def estimate_prompt_tokens(messages: Sequence[dict]) -> int:
    """A safe-side estimate of the tokens Groq counts for ``messages``."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages)


def response_format(model: str) -> dict[str, Any]:
    """Strict JSON-schema output where the model supports it, JSON mode elsewhere."""
    if model in STRICT_SCHEMA_MODELS:
        return {
            "type": "json_schema",
            "json_schema": {"name": "program", "schema": REPLY_SCHEMA, "strict": True},
        }
    return {"type": "json_object"}


@dataclass(frozen=True)
class Written:
    program: Program
    validation: ValidationReport
    model: str
    summary: str


class GroqWriter:
    """Writes and repairs programs with Groq. ``client`` is a ``groq.Groq`` (tests give it a
    recorded transport); calls are blocking, the servicer runs them in a worker thread."""

    def __init__(
        self,
        client: groq.Groq,
        models: Sequence[str],
        validator: Validator,
        *,
        max_completion_tokens: int = 16_384,
        tokens_per_minute: int = 8_000,
        reasoning_effort: Literal["low", "medium", "high"] | None = "low",
        temperature: float = 0.2,
        key_name: str = "ZX_CODEGEN_GROQ_API_KEY",
        fallback: str = "set ZX_CODEGEN_BACKEND=template to use the template writer",
    ) -> None:
        if not models:
            raise ValueError("GroqWriter needs at least one model name")
        self.client = client
        self.models = list(models)
        self.validator = validator
        self.max_completion_tokens = max_completion_tokens
        #: The key's plan limit: prompt plus requested completion must fit in it.
        self.tokens_per_minute = tokens_per_minute
        self.reasoning_effort = reasoning_effort
        self.temperature = temperature
        #: Whose key the client holds, for the message when Groq refuses it.
        self.key_name = key_name
        #: What the job can do instead when this key's plan is too small (said with the limit).
        self.fallback = fallback
        #: True for a writer made for one call with a client of its own (closed after that call).
        self.owns_client = False

    def close(self) -> None:
        """Close the HTTP client when this writer owns it (a per-call writer on a caller's key)."""
        if self.owns_client:
            self.client.close()

    def write(self, prompt: str, plan: Plan, profile: DatasetProfile | None, reference: Program) -> Written:
        return self._converse(prompts.generate_messages(prompt, plan, profile, reference), plan, reference)

    def repair(self, program: Program, plan: Plan, failure: ProgramFailure, attempt: int) -> Written:
        return self._converse(prompts.repair_messages(program, plan, failure, attempt), plan, program)

    # -- the conversation ----------------------------------------------------------------------------

    def _converse(self, messages: list[dict], plan: Plan, base: Program) -> Written:
        """``base``: the program the model was shown; the files it lists replace base's."""
        content, model = self._complete(messages, base)
        program, summary = content
        report = self.validator.validate(program)
        if report.passed:
            return Written(program, report, model, summary)
        log.info(
            "groq program failed the static checks; asking once more", model=model, problems=report.summary()
        )
        (program, summary), model = self._complete(
            prompts.invalid_messages(program, plan, report.summary()), program
        )
        report = self.validator.validate(program)
        if not report.passed:
            raise FailedPrecondition(
                f"the program {model} wrote failed the static checks twice: {report.summary()}",
                reason="PROGRAM_INVALID",
                metadata={"model": model},
            )
        return Written(program, report, model, summary)

    def completion_tokens(self, messages: Sequence[dict]) -> int:
        """The completion to ask for: what the per-minute limit leaves after the prompt, at most the
        configured longest reply; FAILED_PRECONDITION when not even MIN_COMPLETION_TOKENS fits."""
        prompt = estimate_prompt_tokens(messages)
        room = self.tokens_per_minute - prompt - MARGIN_TOKENS
        if room < MIN_COMPLETION_TOKENS:
            raise FailedPrecondition(
                f"the Groq request does not fit {self.key_name}'s plan: about {prompt} prompt tokens "
                f"plus at least {MIN_COMPLETION_TOKENS} for the reply exceed its {self.tokens_per_minute} "
                f"tokens per minute; {self.fallback}",
                reason="GROQ_TOKEN_LIMIT",
                metadata={"limit": str(self.tokens_per_minute), "prompt_tokens": str(prompt)},
            )
        return min(self.max_completion_tokens, room)

    def _limit_error(self, exc: groq.APIStatusError, model: str) -> FailedPrecondition:
        """413 (request larger than the plan's per-minute limit) or 429 after the SDK's retries:
        a failure that names the limit, not retried (waiting cannot make a request smaller)."""
        text = _error_text(exc)
        found = _LIMIT.search(text)
        limit = (
            f"{found['what']} ({found['unit']}): Limit {found['limit']}"
            + (f", Used {found['used']}" if found["used"] else "")
            + (f", Requested {found['requested']}" if found["requested"] else "")
            if found
            else ""
        )
        metadata = {"model": model, "status": str(exc.status_code)}
        if found:
            metadata |= {
                "limit": found["limit"],
                "unit": found["unit"],
                "requested": found["requested"] or "",
            }
        retry_after = exc.response.headers.get("retry-after", "")
        if exc.status_code == 413:
            return FailedPrecondition(
                f"Groq refused the request for {model} as larger than {self.key_name}'s plan allows"
                + (f" ({limit})" if limit else f": {text}")
                + f"; {self.fallback}",
                reason="GROQ_TOKEN_LIMIT",
                metadata=metadata,
            )
        if retry_after:
            metadata["retry_after_s"] = retry_after
        return FailedPrecondition(
            f"Groq is rate limiting {self.key_name} on {model}"
            + (f" ({limit})" if limit else f": {text}")
            + (f"; it said to retry after {retry_after} s" if retry_after else "")
            + f"; {self.fallback}",
            reason="GROQ_RATE_LIMIT",
            metadata=metadata,
        )

    def _complete(self, messages: list[dict], base: Program) -> tuple[tuple[Program, str], str]:
        """A parsed program from the first model that gives one; typed errors when none does."""
        retired: list[str] = []
        bad_replies: list[str] = []
        max_completion_tokens = self.completion_tokens(messages)
        for model in self.models:
            # sent to the models that take it (gpt-oss), left out of the request for the others
            effort = (
                self.reasoning_effort
                if self.reasoning_effort and model in STRICT_SCHEMA_MODELS
                else groq.omit
            )
            for _try in range(2):  # a malformed reply gets one more chance with the same model
                try:
                    # messages and response_format are the plain dicts the SDK sends; its overloads
                    # want its TypedDicts
                    response = self.client.chat.completions.create(  # type: ignore[call-overload]
                        model=model,
                        messages=messages,
                        response_format=response_format(model),
                        temperature=self.temperature,
                        max_completion_tokens=max_completion_tokens,
                        reasoning_effort=effort,
                    )
                except groq.NotFoundError as exc:
                    log.warning("groq model unavailable; trying the next", model=model, code=_error_code(exc))
                    retired.append(model)
                    break
                except groq.BadRequestError as exc:
                    code = _error_code(exc)
                    if code == "model_decommissioned":
                        log.warning("groq model decommissioned; trying the next", model=model)
                        retired.append(model)
                        break
                    if code != "json_validate_failed":
                        raise FailedPrecondition(
                            f"Groq refused the request for {model}: {exc.message}",
                            reason="BACKEND_REFUSED",
                            metadata={"model": model, "code": code},
                        ) from None
                    bad_replies.append(f"{model}: json_validate_failed")
                    continue
                except groq.RateLimitError as exc:
                    raise self._limit_error(exc, model) from None
                except (groq.AuthenticationError, groq.PermissionDeniedError) as exc:
                    raise FailedPrecondition(
                        f"Groq refused the API key ({exc.status_code}): check {self.key_name}",
                        reason="BACKEND_AUTH",
                    ) from None
                except (groq.APIConnectionError, groq.InternalServerError) as exc:
                    raise Unavailable(f"Groq is unreachable: {exc}", reason="BACKEND_UNAVAILABLE") from None
                except groq.APIStatusError as exc:
                    if exc.status_code == 413:
                        raise self._limit_error(exc, model) from None
                    raise Unavailable(
                        f"Groq answered {exc.status_code}: {exc.message}", reason="BACKEND_UNAVAILABLE"
                    ) from None
                choice = response.choices[0] if response.choices else None
                content = choice.message.content if choice is not None else None
                try:
                    return parse_reply(content, base), model
                except BadReply as exc:
                    truncated = choice is not None and choice.finish_reason == "length"
                    bad_replies.append(
                        f"{model}: {exc}"
                        + (
                            f" (cut off at max_completion_tokens={max_completion_tokens})"
                            if truncated
                            else ""
                        )
                    )
        if bad_replies:
            raise FailedPrecondition(
                "no model returned a usable program: " + "; ".join(bad_replies[-4:])
                + (f"; retired or unknown: {', '.join(retired)}" if retired else ""),
                reason="BAD_REPLY",
            )  # fmt: skip
        raise FailedPrecondition(
            f"every configured Groq model is retired or unknown: {', '.join(retired)}; set "
            "ZX_CODEGEN_GROQ_MODELS (for example openai/gpt-oss-120b)",
            reason="MODEL_RETIRED",
            metadata={"models": ",".join(retired)},
        )
