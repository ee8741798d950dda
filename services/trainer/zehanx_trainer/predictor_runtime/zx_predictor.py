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
writes to file descriptor 1) go to stderr. Only the standard library is needed here: orjson, when
the sandbox's Python has it, reads and writes the lines (a 1000-row batch's JSON took as long as the
model's predict() with json alone), and json does whatever orjson would do differently: text holding
an integer of 19 digits or more (orjson reads those beyond 64 bits as floats), text orjson refuses
(NaN, which json reads), and answers orjson cannot write or writes as ``null`` (NaN: json refuses it,
so a NaN prediction stays this call's error). orjson also writes UUIDs and enums, which json refuses.
The trainer checks the answer the same way whichever wrote it.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
import uuid

try:
    import orjson
except ImportError:  # the standard library alone
    orjson = None

PROTOCOL = 1
#: Digits become "0"; what may come before an integer's first digit (or its sign) becomes "x".
_SHAPE = bytes(
    ord("0") if chr(c).isdigit() and c < 128 else ord("x") if chr(c) in ",:[ \t\r\n-" else c
    for c in range(256)
)
_LONG = b"0" * 19


def _loads(line: bytes):
    """``json.loads(line)``, through orjson when it gives the same value."""
    if orjson is not None:
        shape = line.translate(_SHAPE)
        if b"x" + _LONG not in shape and not shape.startswith(_LONG):
            try:
                return orjson.loads(line)
            except orjson.JSONDecodeError:
                pass  # json's own verdict
    return json.loads(line)


def _dumps(obj) -> bytes:
    """``obj`` as one JSON line (UTF-8); ValueError for NaN, TypeError for what JSON cannot hold."""
    if orjson is not None:
        try:
            out = orjson.dumps(obj, option=orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME)
        except TypeError:
            out = b"null"
        if b"null" not in out:
            return out + b"\n"
    return (json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


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
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # The trainer names each process it starts (visible in the host's process list, for operators).
    instance = sys.argv[3] if len(sys.argv) > 3 else uuid.uuid4().hex

    def reply(obj: dict) -> None:
        replies.write(_dumps(obj))
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

    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            request = _loads(line)
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
            text = _dumps({"predictions": predictions})
        except Exception as exc:
            traceback.print_exc()
            reply(_error(exc, "predict"))
            continue
        finally:
            sys.stderr.flush()
        replies.write(text)
        replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
