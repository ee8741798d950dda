"""The resident predictor: ``python zx_predictor.py MODULE MODEL_DIR [INSTANCE]``, run in the sandbox.

The trainer stages this file next to the model's program and keeps the process alive through the
executor's session RPC. It imports the program's predict module (``MODULE``, e.g. ``predict``), calls
``load(MODEL_DIR)`` once and then answers requests, one JSON line each way:

    stdin:  {"hello": 1}              ->  stdout: {"ready": {"load_s": 0.41, "instance": "<hex>"}}
    stdin:  {"rows": [{...}, ...]}    ->  stdout: {"predictions": [{...}, ...]}
                                          or      {"error": {"type", "message", "where"}}

The first request is always the hello: its reply comes once the model is loaded (or carries the load's
error, and the process exits 1). An exception in ``predict`` answers an error for that call and the
process keeps serving; a crash (a segfault, ``os._exit``, the memory limit) ends the process, and with
it the session. stdout belongs to the replies: the program's own prints (Python's and C libraries'
writes to file descriptor 1) go to stderr. Only the standard library is used here.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
import uuid

PROTOCOL = 1


def _where(exc: BaseException) -> str:
    """The innermost frame in the program's own files (the working folder), as ``path:line``."""
    here = os.path.realpath(os.getcwd()) + os.sep
    me = os.path.realpath(__file__)
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
            continue
        path = os.path.realpath(frame.filename)
        if path.startswith(here) and path != me:
            found = f"{os.path.relpath(path, here)}:{frame.lineno}"
    return found


def _error(exc: BaseException, stage: str) -> dict:
    message = str(exc)
    if len(message) > 4000:
        message = message[:4000] + "…"
    return {"error": {"type": type(exc).__name__, "message": message, "where": _where(exc), "stage": stage}}


def main() -> int:
    module_name, model_dir = sys.argv[1], sys.argv[2]
    # A private copy of stdout for the replies; fd 1 becomes stderr for everything else.
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8", newline="\n")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # The trainer names each process it starts (visible in the host's process list, for operators).
    instance = sys.argv[3] if len(sys.argv) > 3 else uuid.uuid4().hex

    def reply(obj: dict) -> None:
        replies.write(json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n")
        replies.flush()

    started = time.monotonic()
    state = None
    load_error = None
    try:
        module = importlib.import_module(module_name)
        load, predict = getattr(module, "load", None), getattr(module, "predict", None)
        if not callable(load) or not callable(predict):
            raise AttributeError(f"{module_name}.py defines no load(model_dir) and predict(state, rows)")
        state = load(model_dir)
    except BaseException as exc:
        traceback.print_exc()
        load_error = _error(exc, "load")
    load_s = time.monotonic() - started

    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except ValueError as exc:
            reply(_error(exc, "request"))
            continue
        if "hello" in request:
            if load_error is not None:
                reply(load_error)
                return 1
            reply({"ready": {"load_s": round(load_s, 6), "instance": instance, "protocol": PROTOCOL}})
            continue
        rows = request.get("rows")
        if load_error is not None or not isinstance(rows, list):
            reply(load_error or _error(ValueError("a request holds {'rows': [...]}"), "request"))
            continue
        try:
            predictions = predict(state, rows)
            if not isinstance(predictions, list):
                raise TypeError(f"predict() returned {type(predictions).__name__}, not a list")
            # Serialised here, so a value JSON cannot hold is this call's error, not a crash.
            text = json.dumps({"predictions": predictions}, ensure_ascii=False, allow_nan=False)
        except Exception as exc:
            traceback.print_exc()
            reply(_error(exc, "predict"))
            continue
        finally:
            sys.stderr.flush()
        replies.write(text + "\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
