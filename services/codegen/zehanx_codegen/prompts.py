"""What the chat model is told: the program contract, the plan, the data, and a working reference.

The reference is the template generator's own program for the same plan: the model starts from code
that is known to run, so what it returns is an improvement or a rewrite, not a guess at the contract.
The model lists only the files it changes (the writer keeps the others): a reply need not repeat the
program, which would not fit a Free-plan key's tokens per minute beside the prompt.
"""

from __future__ import annotations

import json
from typing import Any

from zehanx_codegen.domain import DatasetProfile, Plan, Program, ProgramFailure
from zehanx_codegen.validator import ALLOWED_STDLIB, ALLOWED_THIRD_PARTY

SYSTEM = (
    """You write PyTorch training programs for the Zehanx platform. Reply with one JSON object:
{"files": [{"path": "train.py", "content": "..."}, ...], "summary": "one paragraph: the model and why"}
"files" lists only the files you add or change, each one whole; a file you leave out is kept as it is
(an empty list keeps the program unchanged).

The program contract (version 1):
- train.py: `import zxrt`; `cfg = zxrt.env()` gives data_dir, output_dir, smoke, device, time_budget_s, seed.
  Read train.jsonl and validation.jsonl (one JSON object per line, the target column included) and
  schema.json from cfg.data_dir. Never read a test split. With cfg.smoke true, run a few batches only.
  Stop before cfg.time_budget_s seconds (when set). Report with zxrt.phase(name) (setup, data_loading,
  model_building, training, validation, saving, prediction), zxrt.log_metrics(step, epoch=, loss=, lr=,
  val={"accuracy": ...}), zxrt.log(message), zxrt.report_final({name: number}).
  Save the model with zxrt.save_model(model_or_dict_of_tensors, config_dict): it writes
  model.safetensors and model_config.json (config_dict holds what predict.py needs: sizes, classes in
  order, vocabulary, normalisation constants; JSON only).
- predict.py defines, at its top level, `load(model_dir)` (reads model.safetensors with
  safetensors.torch.load_file and model_config.json with json from that folder, builds the model
  once, returns whatever state predict needs) and `predict(state, rows)` (rows: a list of dicts of
  the input columns only; returns one dict per row, in order: {"prediction": value} plus
  "probabilities": {label: p} for classification). The platform imports predict.py, calls load once
  and predict for each batch, so nothing but imports, constants and definitions runs at import time.
  main() is `python predict.py INPUT.jsonl OUTPUT.jsonl`: paths from sys.argv,
  state = load(os.environ["ZX_OUTPUT"]), one JSON object per input line written per prediction.
- Both define main() and end with `if __name__ == "__main__": main()`. Other .py files may be helpers
  imported by name (no relative imports). zxrt.py is provided; do not ship it.
- Allowed imports: the program's own files, """
    + ", ".join(sorted(ALLOWED_THIRD_PARTY | ALLOWED_STDLIB))
    + """.
  Nothing else: no network, no subprocess, no pickle, torch.load or torch.save, no eval/exec.
- Files are opened only under cfg.data_dir, cfg.output_dir (or ZX_DATA / ZX_OUTPUT) and, in predict.py,
  the paths in sys.argv.
- Write plain, linear code a person can read: config at the top, small helpers, one visible training
  loop, comments that say why. Class labels keep their JSON type."""
)


def _plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "task_family": plan.task_family.value,
        "target_column": plan.target_column,
        "input_columns": list(plan.input_columns),
        "metric": plan.metric_name,
        "metric_goal": plan.metric_goal.value,
        "model_family": plan.model_family,
        "hyperparameters": dict(plan.hyperparameters),
        "rationale": plan.rationale,
    }


def _profile_json(profile: DatasetProfile | None) -> dict[str, Any]:
    if profile is None:
        return {}
    return {
        "rows": profile.row_count,
        "columns": [
            {
                "name": c.name,
                "type": c.type.value,
                "missing": c.missing_count,
                "distinct": c.distinct_count,
                "samples": list(c.sample_values[:3]),
            }
            for c in profile.columns[:60]
        ],
        "classes": [{"label": c.label, "count": c.count} for c in profile.classes[:50]],
        "image_shape": list(profile.image_shape),
        "time_column": profile.time_column,
    }


def _files_text(program: Program, limit: int = 60_000) -> str:
    parts = []
    for path, text in sorted(program.files.items()):
        parts.append(f"--- {path}\n{text}")
    joined = "\n".join(parts)
    return joined if len(joined) <= limit else joined[:limit] + "\n[... cut ...]"


def generate_messages(
    prompt: str, plan: Plan, profile: DatasetProfile | None, reference: Program
) -> list[dict]:
    user = (
        f"The user asked: {prompt}\n\nThe plan (follow it):\n{json.dumps(_plan_json(plan))}\n\n"
        f"The dataset:\n{json.dumps(_profile_json(profile))}\n\n"
        "A reference program for this plan that follows the contract and runs. Return it improved where "
        "you are sure it helps, or unchanged (list only the files you change):\n" + _files_text(reference)
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def repair_messages(program: Program, plan: Plan, failure: ProgramFailure, attempt: int) -> list[dict]:
    where = f"{failure.file_path}:{failure.line}" if failure.file_path else "unknown location"
    user = (
        f"This program failed (repair attempt {attempt} of 3). Fix the cause; list only the files you change.\n\n"
        f"Failure: phase {failure.phase.value}, {failure.exception_type or 'error'} at {where}: "
        f"{failure.message}\nTraceback tail:\n{failure.traceback_tail[-4000:]}\n\n"
        f"The plan:\n{json.dumps(_plan_json(plan))}\n\nThe program:\n" + _files_text(program)
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def invalid_messages(program: Program, plan: Plan, problems: str) -> list[dict]:
    """The program the model wrote and the static checks it failed; fix them. A conversation of its
    own, not the first one plus the reply: that would be two programs long, more than a Free-plan
    key's tokens per minute allow."""
    user = (
        f"This program failed the static checks: {problems}\n\nThe plan:\n"
        f"{json.dumps(_plan_json(plan))}\n\nThe program:\n" + _files_text(program)
        + "\n\nReply with the same JSON object, listing the files that fix them."
    )  # fmt: skip
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
