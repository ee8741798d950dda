"""Deterministic repairs for template programs: read the failure, change the plan, render again.

A template program that fails in a smoke run failed for one of a few reasons, each with a safer
plan to try:

- out of memory or killed → smaller batches and a smaller model;
- too slow (a time limit) → fewer steps or epochs and smaller features;
- a loss that became NaN/inf → a smaller learning rate;
- anything else, when the program is no longer the template's own (someone or something edited it)
  → the template's own program for the same plan.

When none applies (the template's own program failed on something no setting changes), the repairer
says so: :class:`FailedPrecondition` with the failure in the message. It never pretends.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from zehanx_runtime.errors import FailedPrecondition

from zehanx_codegen.domain import Plan, Program, ProgramFailure, TaskFamily
from zehanx_codegen.hyperparameters import TREES_MODEL_FAMILY

_MEMORY = re.compile(
    r"out of memory|MemoryError|Cannot allocate memory|killed|memory limit|OOM", re.IGNORECASE
)
_TIME = re.compile(r"time ?out|timed out|time limit|deadline|TimeoutError", re.IGNORECASE)
_NAN = re.compile(r"\bnan\b|\binf\b|not finite|non-finite|diverg", re.IGNORECASE)


def _halve(value: Any, floor: int) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > floor:
        return max(floor, int(value) // 2)
    return value


def _smaller(plan: Plan) -> tuple[dict[str, Any], list[str]]:
    hp = dict(plan.hyperparameters)
    notes = []
    family = plan.task_family
    if family is TaskFamily.IMAGE_CLASSIFICATION:
        hp["batch_size"] = _halve(hp.get("batch_size", 64), 8)
        hp["conv_channels"] = [max(8, int(c) // 2) for c in hp.get("conv_channels", [32, 64, 128])]
        notes.append(f"batches of {hp['batch_size']} and conv channels {hp['conv_channels']}")
    elif plan.model_family == TREES_MODEL_FAMILY:
        hp["max_leaves"] = _halve(hp.get("max_leaves", 31), 4)
        hp["max_iterations"] = _halve(hp.get("max_iterations", 2_000), 20)
        notes.append(f"trees of at most {hp['max_leaves']} leaves, at most {hp['max_iterations']} rounds")
    elif family is TaskFamily.TIME_SERIES_CLASSIFICATION:
        hp["num_features"] = _halve(hp.get("num_features", 9_996), 84 * 4)
        notes.append(f"{hp['num_features']} MiniRocket features")
    elif family in (TaskFamily.TABULAR_CLASSIFICATION, TaskFamily.TABULAR_REGRESSION):
        hp["batch_size"] = 256 if not hp.get("batch_size") else _halve(hp["batch_size"], 32)
        hp["hidden_size"] = _halve(hp.get("hidden_size", 64), 16)
        notes.append(
            f"mini-batches of {hp['batch_size']} instead of the whole set, {hp['hidden_size']} hidden units"
        )
    elif family is TaskFamily.TEXT_CLASSIFICATION:
        if hp.get("use_encoder"):
            hp["use_encoder"], hp["encoder"] = False, ""
            notes.append("no sentence encoder")
        hp["max_features"] = _halve(hp.get("max_features", 500_000), 5_000)
        notes.append(f"at most {hp['max_features']} n-grams")
    return hp, notes


def _faster(plan: Plan) -> tuple[dict[str, Any], list[str]]:
    hp, notes = _smaller(plan)
    if hp.get("members", 1) > 1:
        hp["members"] = 1
        notes.append("one CNN instead of an ensemble")
    if "epochs" in hp:
        hp["epochs"] = _halve(hp["epochs"], 1)
        notes.append(f"{hp['epochs']} epochs")
    if "max_steps" in hp:
        hp["max_steps"] = _halve(hp["max_steps"], 20)
        notes.append(f"at most {hp['max_steps']} steps")
    if "lbfgs_steps" in hp:
        hp["lbfgs_steps"] = _halve(hp["lbfgs_steps"], 3)
        hp["c_grid"] = list(hp.get("c_grid", [10.0]))[:2]
        notes.append(f"{hp['lbfgs_steps']} L-BFGS rounds, C in {hp['c_grid']}")
    return hp, notes


def _calmer(plan: Plan) -> tuple[dict[str, Any], list[str]]:
    hp = dict(plan.hyperparameters)
    if "learning_rate" not in hp:
        return hp, []
    hp["learning_rate"] = float(hp["learning_rate"]) / 10
    return hp, [f"learning rate {hp['learning_rate']:g} (a tenth)"]


@dataclasses.dataclass(frozen=True)
class TemplateRepair:
    plan: Plan
    program: Program
    summary: str


def repair_template_program(
    program: Program,
    plan: Plan,
    failure: ProgramFailure,
    attempt: int,
    render: Callable[[Plan], Program],
) -> TemplateRepair:
    """A fixed program (with the plan it implements now), or FailedPrecondition saying why not."""
    text = " ".join((failure.exception_type, failure.message, failure.traceback_tail[-2000:]))
    own = render(plan)
    where = f" ({failure.file_path}:{failure.line})" if failure.file_path else ""
    what = f"{failure.exception_type or 'failure'}: {failure.message[:300]}{where}"
    if _MEMORY.search(text):
        kind, (hp, notes) = "ran out of memory", _smaller(plan)
    elif _TIME.search(text):
        kind, (hp, notes) = "ran out of time", _faster(plan)
    elif _NAN.search(text):
        kind, (hp, notes) = "diverged", _calmer(plan)
    elif program.files != own.files:
        changed = ", ".join(program.changed_paths(own)) or "its files"
        return TemplateRepair(
            plan, own, f"the program differs from the {plan.task_family.value} template in {changed} and failed "
            f"with {what}; it was rendered again from the plan"
        )  # fmt: skip
    else:
        raise FailedPrecondition(
            f"the template program failed with {what}, which no change of settings fixes; "
            "the data or the sandbox limits need a look",
            reason="NOT_REPAIRABLE",
            metadata={"attempt": str(attempt), "phase": failure.phase.value},
        )
    if hp == dict(plan.hyperparameters):
        raise FailedPrecondition(
            f"the program {kind} ({what}) and its settings are already as small as this template goes",
            reason="NOT_REPAIRABLE",
            metadata={"attempt": str(attempt)},
        )
    new_plan = dataclasses.replace(
        plan,
        hyperparameters=hp,
        rationale=plan.rationale + f"\nRepair {attempt}: the program {kind}; now " + ", ".join(notes) + ".",
    )
    return TemplateRepair(new_plan, render(new_plan), f"the program {kind} ({what}); now " + ", ".join(notes))
