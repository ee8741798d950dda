"""The online program writer: Groq chat completions (``groq`` SDK), then the same static checks as
templates.

The model names come from settings, first choice first (``openai/gpt-oss-120b``, then
``openai/gpt-oss-20b``; the seed's ``mixtral-8x7b-32768`` and the Llama 3.x models are retired).
What can go wrong, and what happens:

- a model that is retired or unknown (404 ``model_not_found`` / ``model_decommissioned``): the next
  model in the list; when none is left, FAILED_PRECONDITION naming them;
- ``json_validate_failed`` (400; the model's reply was not the JSON asked for) or a reply that is not
  a program: once more with the same model, then the next model;
- rate limited (429) after the SDK's own retries: UNAVAILABLE with the server's ``retry-after``;
- unreachable, timed out or a server error: UNAVAILABLE;
- a key the API refuses (401/403): FAILED_PRECONDITION, since retrying cannot help;
- a program that fails the static checks: one more round with the problems listed, then
  FAILED_PRECONDITION with the checks that failed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


class BadReply(Exception):
    """The model's reply is not a program in the JSON shape asked for."""


def parse_reply(content: str | None) -> tuple[Program, str]:
    """``{"files": [{"path", "content"}], "summary"}`` → (program, summary), or BadReply saying why."""
    if not content:
        raise BadReply("the reply is empty")
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise BadReply(f"the reply is not JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list) or not data["files"]:
        raise BadReply('the reply has no "files" list')
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
    summary = data.get("summary") if isinstance(data.get("summary"), str) else ""
    return Program(files=files), summary[:2000]


def _error_code(exc: groq.APIStatusError) -> str:
    body: Any = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("code") or inner.get("type") or "")
    return ""


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
        temperature: float = 0.2,
        key_name: str = "ZX_CODEGEN_GROQ_API_KEY",
    ) -> None:
        if not models:
            raise ValueError("GroqWriter needs at least one model name")
        self.client = client
        self.models = list(models)
        self.validator = validator
        self.max_completion_tokens = max_completion_tokens
        self.temperature = temperature
        #: Whose key the client holds, for the message when Groq refuses it.
        self.key_name = key_name
        #: True for a writer made for one call with a client of its own (closed after that call).
        self.owns_client = False

    def close(self) -> None:
        """Close the HTTP client when this writer owns it (a per-call writer on a caller's key)."""
        if self.owns_client:
            self.client.close()

    def write(self, prompt: str, plan: Plan, profile: DatasetProfile | None, reference: Program) -> Written:
        return self._converse(prompts.generate_messages(prompt, plan, profile, reference))

    def repair(self, program: Program, plan: Plan, failure: ProgramFailure, attempt: int) -> Written:
        return self._converse(prompts.repair_messages(program, plan, failure, attempt))

    # -- the conversation ----------------------------------------------------------------------------

    def _converse(self, messages: list[dict]) -> Written:
        content, model = self._complete(messages)
        program, summary = content
        report = self.validator.validate(program)
        if report.passed:
            return Written(program, report, model, summary)
        log.info(
            "groq program failed the static checks; asking once more", model=model, problems=report.summary()
        )
        raw = json.dumps({"files": [{"path": p, "content": t} for p, t in program.files.items()]})
        (program, summary), model = self._complete(prompts.invalid_messages(messages, raw, report.summary()))
        report = self.validator.validate(program)
        if not report.passed:
            raise FailedPrecondition(
                f"the program {model} wrote failed the static checks twice: {report.summary()}",
                reason="PROGRAM_INVALID",
                metadata={"model": model},
            )
        return Written(program, report, model, summary)

    def _complete(self, messages: list[dict]) -> tuple[tuple[Program, str], str]:
        """A parsed program from the first model that gives one; typed errors when none does."""
        retired: list[str] = []
        bad_replies: list[str] = []
        for model in self.models:
            for _try in range(2):  # a malformed reply gets one more chance with the same model
                try:
                    response = self.client.chat.completions.create(
                        model=model,
                        messages=messages,  # type: ignore[arg-type]
                        response_format={"type": "json_object"},
                        temperature=self.temperature,
                        max_completion_tokens=self.max_completion_tokens,
                    )
                except groq.NotFoundError as exc:
                    log.warning("groq model unavailable; trying the next", model=model, code=_error_code(exc))
                    retired.append(model)
                    break
                except groq.BadRequestError as exc:
                    if _error_code(exc) != "json_validate_failed":
                        raise FailedPrecondition(
                            f"Groq refused the request for {model}: {exc.message}",
                            reason="BACKEND_REFUSED",
                            metadata={"model": model, "code": _error_code(exc)},
                        ) from None
                    bad_replies.append(f"{model}: json_validate_failed")
                    continue
                except groq.RateLimitError as exc:
                    retry_after = exc.response.headers.get("retry-after", "")
                    raise Unavailable(
                        f"Groq is rate limiting this key (model {model})"
                        + (f"; retry after {retry_after} s" if retry_after else ""),
                        reason="RATE_LIMITED",
                        metadata={"model": model, "retry_after_s": retry_after},
                    ) from None
                except (groq.AuthenticationError, groq.PermissionDeniedError) as exc:
                    raise FailedPrecondition(
                        f"Groq refused the API key ({exc.status_code}): check {self.key_name}",
                        reason="BACKEND_AUTH",
                    ) from None
                except (groq.APIConnectionError, groq.InternalServerError) as exc:
                    raise Unavailable(f"Groq is unreachable: {exc}", reason="BACKEND_UNAVAILABLE") from None
                except groq.APIStatusError as exc:
                    raise Unavailable(
                        f"Groq answered {exc.status_code}: {exc.message}", reason="BACKEND_UNAVAILABLE"
                    ) from None
                choice = response.choices[0] if response.choices else None
                content = choice.message.content if choice is not None else None
                try:
                    return parse_reply(content), model
                except BadReply as exc:
                    truncated = choice is not None and choice.finish_reason == "length"
                    bad_replies.append(
                        f"{model}: {exc}" + (" (cut off at max_completion_tokens)" if truncated else "")
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
