"""The codegen domain: plan, generate, repair. No grpc here; the servicer converts in and out.

Backends come in through the constructor: the planner, the template generator (always there: it is
the offline default and the reference the online writer starts from), the validator, and optionally
the Groq writer. Every program returned has passed the validator.
"""

from __future__ import annotations

from collections.abc import Callable

from zehanx_runtime.errors import FailedPrecondition

from zehanx_codegen.domain import (
    DatasetProfile,
    Generated,
    Plan,
    Program,
    ProgramFailure,
    Repaired,
    TaskFamily,
)
from zehanx_codegen.generator import TemplateGenerator, prompt_of
from zehanx_codegen.groq_backend import GroqWriter
from zehanx_codegen.planner import Planner, PlanOptions
from zehanx_codegen.repair import repair_template_program
from zehanx_codegen.validator import Validator

MAX_REPAIRS = 3


class Codegen:
    def __init__(
        self,
        planner: Planner,
        templates: TemplateGenerator,
        validator: Validator,
        writer: GroqWriter | None = None,
        *,
        time_budget_s: float = 180.0,
        writer_for_key: Callable[[str], GroqWriter] | None = None,
    ) -> None:
        self.planner = planner
        self.templates = templates
        self.validator = validator
        self.writer = writer
        self.time_budget_s = time_budget_s
        #: A Groq writer using a caller's own key (a job owner's, sent by the gateway) for one call.
        self.writer_for_key = writer_for_key

    def _writer(self, groq_api_key: str | None) -> GroqWriter | None:
        """The caller's own Groq key, when given, writes with Groq on that key instead of the
        configured backend and key."""
        if groq_api_key and self.writer_for_key is not None:
            return self.writer_for_key(groq_api_key)
        return self.writer

    @property
    def backend(self) -> str:
        return "groq" if self.writer is not None else "template"

    def plan(
        self,
        prompt: str,
        profile: DatasetProfile,
        *,
        target_hint: str | None = None,
        task_hint: TaskFamily | None = None,
    ) -> Plan:
        options = PlanOptions(target_hint=target_hint, task_hint=task_hint, time_budget_s=self.time_budget_s)
        return self.planner.plan(prompt, profile, options)

    def _render(self, plan: Plan, prompt: str = "") -> Program:
        program = self.templates.generate(plan, prompt=prompt)
        report = self.validator.validate(program)
        if not report.passed:  # a template that fails its own checks is a bug here, said plainly
            raise FailedPrecondition(
                f"the {plan.task_family.value} template failed the static checks: {report.summary()}",
                reason="PROGRAM_INVALID",
            )
        return program

    def generate(
        self,
        prompt: str,
        plan: Plan,
        profile: DatasetProfile | None = None,
        *,
        groq_api_key: str | None = None,
    ) -> Generated:
        reference = self._render(plan, prompt)
        writer = self._writer(groq_api_key)
        if writer is None:
            return Generated(reference, self.validator.validate(reference), "template")
        try:
            written = writer.write(prompt, plan, profile, reference)
        finally:
            writer.close()
        return Generated(written.program, written.validation, f"groq:{written.model}", (written.summary,))

    def repair(
        self,
        program: Program,
        plan: Plan,
        failure: ProgramFailure,
        attempt: int,
        profile: DatasetProfile | None = None,
        *,
        groq_api_key: str | None = None,
    ) -> Repaired:
        if not 1 <= attempt <= MAX_REPAIRS:
            raise FailedPrecondition(
                f"attempt {attempt}: at most {MAX_REPAIRS} repairs", reason="TOO_MANY_REPAIRS"
            )
        writer = self._writer(groq_api_key)
        if writer is not None:
            try:
                written = writer.repair(program, plan, failure, attempt)
            finally:
                writer.close()
            return Repaired(
                written.program, written.validation, f"groq:{written.model}",
                written.summary or "rewritten by the model after the failure",
                tuple(program.changed_paths(written.program)),
            )  # fmt: skip
        prompt = prompt_of(program)
        fixed = repair_template_program(program, plan, failure, attempt, lambda p: self._render(p, prompt))
        return Repaired(
            fixed.program, self.validator.validate(fixed.program), "template", fixed.summary,
            tuple(program.changed_paths(fixed.program)),
        )  # fmt: skip
