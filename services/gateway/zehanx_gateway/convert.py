"""Protos <-> domain types for the gateway: the one place that knows both.

Stored JSON (a job's sources and options, event payloads, model details) is the protobuf JSON form
with the proto field names, so a reader of the tables through Supabase sees familiar names, and
reading it back ignores fields a newer version added.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import any_pb2, json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from zehanx.common.v1 import prediction_pb2, task_family_pb2
from zehanx.gateway.v1 import account_pb2, dataset_record_pb2, job_event_pb2, job_pb2, model_pb2
from zehanx_runtime.errors import FieldViolation, InvalidArgument

from zehanx_gateway.domain import (
    STATE_CHANGE,
    ApiKey,
    DatasetRecord,
    InstancesJsonl,
    Job,
    JobEvent,
    JobState,
    Model,
    NewJob,
    NewModel,
    PendingEvent,
    Prediction,
    Provider,
    SealedProviderKey,
    Upload,
    UserSettings,
)

ERROR_DOMAIN = "gateway.zehanx"
#: Instances in one Predict (as the proto's max_items on ``instances`` says).
MAX_INSTANCES = 1000

#: Event kinds a producer may publish: the names of the JobEvent ``event`` oneof, less the two the
#: registry writes itself (``snapshot`` is never stored; ``state_change`` comes from transitions).
PUBLISHABLE_KINDS = frozenset(
    field.name
    for field in job_event_pb2.JobEvent.DESCRIPTOR.oneofs_by_name["event"].fields
    if field.name not in ("snapshot", STATE_CHANGE)
)

# -- small helpers ---------------------------------------------------------------------------------


def parse_id(value: str, field: str) -> uuid.UUID:
    """A UUID from a request field (protovalidate checks it first; this is the belt to its braces)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(
            f"{field} must be a UUID",
            violations=[FieldViolation(field, "value must be a valid UUID", "string.uuid")],
        ) from None


def invalid(field: str, description: str, rule: str = "stream.message") -> InvalidArgument:
    """INVALID_ARGUMENT naming one field (for rules protovalidate cannot express, such as which message
    of a stream must carry what)."""
    return InvalidArgument(f"{field}: {description}", violations=[FieldViolation(field, description, rule)])


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _from_json(payload: Mapping[str, Any], message: Message) -> Message:
    json_format.ParseDict(dict(payload), message, ignore_unknown_fields=True)
    return message


def _state(value: str | None) -> int:
    return job_pb2.JobState.Value(f"JOB_STATE_{value}") if value else job_pb2.JOB_STATE_UNSPECIFIED


def _stage(value: str | None) -> int:
    return job_pb2.JobStage.Value(f"JOB_STAGE_{value}") if value else job_pb2.JOB_STAGE_UNSPECIFIED


def state_of(value: int) -> JobState:
    return JobState(job_pb2.JobState.Name(value).removeprefix("JOB_STATE_"))


def error_status(
    code: str, message: str, reason: str, metadata: Mapping[str, str] | None = None
) -> status_pb2.Status:
    """A google.rpc.Status with an ErrorInfo detail, as the job's ``error``."""
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason=reason or code, domain=ERROR_DOMAIN, metadata=dict(metadata or {}))
    )
    number = code_pb2.Code.Value(code) if code in code_pb2.Code.keys() else code_pb2.UNKNOWN
    return status_pb2.Status(code=number, message=message, details=[info])


def _reject_nul(value: Any, path: str) -> None:
    """PostgreSQL text cannot hold NUL characters: say which field has one."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidArgument(
                f"{path} contains a NUL character",
                violations=[
                    FieldViolation(path, "must not contain NUL (U+0000) characters", "string.no_nul")
                ],
            )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _reject_nul(key, path)
            _reject_nul(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_nul(item, f"{path}[{index}]")


# -- free-form values (google.protobuf.Value) -------------------------------------------------------
#
# protovalidate cannot bound these: CEL has no measure of a Value's encoded size or nesting depth, and
# evaluating rules over a Value walks every node in its native code (measured: 71 s on the loop for
# one 8 MB list of 2 M booleans, before any handler ran). So the protos tell protovalidate to skip
# them (`ignore: IGNORE_ALWAYS` on the values) and the gateway checks them here, before any
# MessageToDict / ParseDict: the size first with ByteSize() (upb, C: about 45 ns per node, the same
# order as decoding the request), then the depth with a walk whose cost that size bounds.

#: Most encoded bytes of a job's hyperparameters (all values together) and their deepest nesting
#: (a scalar is depth 0, a list or object of scalars depth 1). Small enough that converting them on
#: the loop does not matter: with the most nodes that fit (960 booleans in 64 lists), the check takes
#: 0.5 ms, new_job's MessageToDict 3 to 8 ms and job_to_proto's ParseDict (GetJob, each ListJobs item,
#: WatchJob's snapshot) about 6 ms, where a 10.5 MiB value took 3.0 s and 3.7 s.
HYPERPARAMETERS_MAX_BYTES = 4096
HYPERPARAMETERS_MAX_DEPTH = 8
#: Deepest nesting of a Predict instance (its total size is ZX_GATEWAY_PREDICT_MAX_BYTES).
INSTANCE_MAX_DEPTH = 32
#: Instances larger than this (in total) have their depth checked in a worker thread, not on the loop.
INSTANCES_CHECKED_INLINE_BYTES = 64 * 1024


def _too_large(field: str, size: int, limit: int) -> InvalidArgument:
    return InvalidArgument(
        f"{field} takes at least {size} bytes (encoded); at most {limit} are accepted",
        violations=[
            FieldViolation(field, f"must take at most {limit} bytes (encoded) in total", "value.max_bytes")
        ],
        reason="VALUE_TOO_LARGE",
    )


def _too_deep(field: str, limit: int) -> InvalidArgument:
    return InvalidArgument(
        f"{field} is nested more than {limit} levels deep",
        violations=[FieldViolation(field, f"must be nested at most {limit} levels deep", "value.max_depth")],
        reason="VALUE_TOO_DEEP",
    )


def value_depth(value: struct_pb2.Value, limit: int) -> int:
    """How deep ``value`` nests lists and objects (0 for a scalar, 1 for a list of scalars), counted
    only up to ``limit + 1``: level by level, without recursion, so no value can exhaust the stack."""
    level = [value]
    depth = 0
    while depth <= limit:
        below: list[struct_pb2.Value] = []
        nested = False
        for item in level:
            kind = item.WhichOneof("kind")
            if kind == "list_value":
                nested = True
                below.extend(item.list_value.values)
            elif kind == "struct_value":
                nested = True
                below.extend(item.struct_value.fields.values())
        if not nested:
            return depth
        depth += 1
        level = below
    return depth


def check_values_size(field: str, values: Iterable[struct_pb2.Value], limit: int) -> int:
    """The encoded size of ``values`` together; INVALID_ARGUMENT naming ``field`` beyond ``limit``
    (as soon as the values measured so far pass it)."""
    size = 0
    for value in values:
        size += value.ByteSize()
        if size > limit:
            raise _too_large(field, size, limit)
    return size


def check_values_depth(entries: Iterable[tuple[str, struct_pb2.Value]], limit: int) -> None:
    """INVALID_ARGUMENT naming the first ``(field, value)`` nested deeper than ``limit``."""
    for field, value in entries:
        if value_depth(value, limit) > limit:
            raise _too_deep(field, limit)


def check_hyperparameters(options: job_pb2.JobOptions, field: str) -> None:
    """Bound a JobOptions' hyperparameters (``field`` is the path of the options in the request)."""
    values = options.hyperparameters
    if not values:
        return
    check_values_size(f"{field}.hyperparameters", values.values(), HYPERPARAMETERS_MAX_BYTES)
    check_values_depth(
        ((f'{field}.hyperparameters["{key}"]', value) for key, value in values.items()),
        HYPERPARAMETERS_MAX_DEPTH,
    )


def check_instances_size(instances: Iterable[struct_pb2.Value], max_bytes: int) -> int:
    """The encoded size of Predict's instances together (returned); INVALID_ARGUMENT beyond ``max_bytes``."""
    return check_values_size("instances", instances, max_bytes)


def instances_jsonl(data: bytes, max_bytes: int) -> InstancesJsonl:
    """Predict's ``instances_jsonl`` bounded (size, 1 to 1000 lines, UTF-8, no empty line) without
    parsing it: the trainer parses it once and names a line that is not JSON."""
    if len(data) > max_bytes:
        raise _too_large("instances_jsonl", len(data), max_bytes)
    body = data[:-1] if data.endswith(b"\n") else data
    count = body.count(b"\n") + 1
    if count > MAX_INSTANCES:
        raise invalid(
            "instances_jsonl", f"holds {count} lines; at most {MAX_INSTANCES} instances are accepted"
        )
    if b"\n\n" in body or body.startswith(b"\n") or not body.strip():
        raise invalid("instances_jsonl", "holds an empty line: give one JSON instance on every line")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid("instances_jsonl", f"is not UTF-8 (byte {exc.start})") from None
    return InstancesJsonl(body + b"\n", count)


def check_instances_depth(instances: Iterable[struct_pb2.Value]) -> None:
    """INVALID_ARGUMENT naming the first instance nested deeper than INSTANCE_MAX_DEPTH."""
    check_values_depth(((f"instances[{i}]", v) for i, v in enumerate(instances)), INSTANCE_MAX_DEPTH)


# -- jobs ------------------------------------------------------------------------------------------


def new_job(job: job_pb2.Job, request_id: str) -> NewJob:
    """The domain request of CreateJob: prompt, sources and options (output-only fields ignored).

    The hyperparameters are bounded before anything converts them (INVALID_ARGUMENT naming them)."""
    if job.HasField("options"):
        check_hyperparameters(job.options, "job.options")
    inputs = job_pb2.Job(prompt=job.prompt, sources=job.sources, options=job.options)
    if not job.HasField("options"):
        inputs.ClearField("options")
    spec = _to_json(inputs)
    spec.pop("prompt", None)
    _reject_nul(job.prompt, "job.prompt")
    _reject_nul(spec, "job")
    return NewJob(
        prompt=job.prompt,
        spec=spec,
        request_id=parse_id(request_id, "request_id") if request_id else None,
        request_sha256=hashlib.sha256(inputs.SerializeToString(deterministic=True)).digest(),
    )


def job_to_proto(job: Job) -> job_pb2.Job:
    message = _from_json(job.spec, job_pb2.Job())
    assert isinstance(message, job_pb2.Job)
    message.id = str(job.id)
    message.prompt = job.prompt
    message.state = _state(job.state.value)
    message.stage = _stage(job.stage.value if job.stage else None)
    message.create_time.CopyFrom(_timestamp(job.create_time))
    message.update_time.CopyFrom(_timestamp(job.update_time))
    if job.start_time is not None:
        message.start_time.CopyFrom(_timestamp(job.start_time))
    if job.end_time is not None:
        message.end_time.CopyFrom(_timestamp(job.end_time))
    if job.error is not None and job.state in (JobState.FAILED, JobState.CANCELLED):
        message.error.CopyFrom(error_status(job.error.code, job.error.message, job.error.reason))
    if job.model_id is not None:
        message.model_id = str(job.model_id)
    if job.dataset_id:
        message.dataset_id = job.dataset_id
    message.attempt = job.attempt
    message.repair_count = job.repair_count
    message.last_sequence = job.last_sequence
    message.trace_id = job.trace_id
    return message


# -- events ----------------------------------------------------------------------------------------


def event_to_proto(event: JobEvent) -> job_event_pb2.JobEvent:
    message = job_event_pb2.JobEvent(
        sequence=event.sequence,
        job_id=str(event.job_id),
        stage=_stage(event.stage.value if event.stage else None),
    )
    message.event_time.CopyFrom(_timestamp(event.event_time))
    if event.kind == STATE_CHANGE:
        payload = event.payload
        change = message.state_change
        change.from_state = _state(payload.get("from_state"))
        change.to_state = _state(payload.get("to_state"))
        change.from_stage = _stage(payload.get("from_stage"))
        change.to_stage = _stage(payload.get("to_stage"))
        change.reason = str(payload.get("reason") or "")
        if payload.get("error_message"):
            change.error.CopyFrom(
                error_status(
                    str(payload.get("error_code") or "UNKNOWN"),
                    str(payload["error_message"]),
                    str(payload.get("error_reason") or ""),
                )
            )
    elif event.kind in PUBLISHABLE_KINDS:
        _from_json(event.payload, getattr(message, event.kind))
    # An unknown kind (written by a newer gateway) goes out with an empty oneof; the sequence stays.
    return message


def snapshot_to_proto(job: Job) -> job_event_pb2.JobEvent:
    message = job_event_pb2.JobEvent(
        sequence=job.last_sequence,
        job_id=str(job.id),
        stage=_stage(job.stage.value if job.stage else None),
    )
    message.event_time.CopyFrom(_timestamp(job.update_time))
    message.snapshot.CopyFrom(job_to_proto(job))
    return message


def pending_event(job_id: uuid.UUID, event: job_event_pb2.JobEvent) -> PendingEvent:
    """A producer's JobEvent (its ``event`` oneof set; sequence and job id are assigned here)."""
    kind = event.WhichOneof("event")
    if kind not in PUBLISHABLE_KINDS:
        raise InvalidArgument(
            f"a published event must be one of {sorted(PUBLISHABLE_KINDS)}, not {kind!r}",
            violations=[FieldViolation("event", f"{kind!r} cannot be published", "event.kind")],
        )
    payload = _to_json(getattr(event, kind))
    _reject_nul(payload, kind)
    event_time = event.event_time.ToDatetime(tzinfo=UTC) if event.HasField("event_time") else None
    return PendingEvent(job_id=job_id, kind=kind, payload=payload, event_time=event_time)


# -- models ----------------------------------------------------------------------------------------

#: Model fields kept in their own columns; the rest of the record is the ``details`` JSON.
_MODEL_COLUMNS = (
    "id",
    "job_id",
    "title",
    "prompt",
    "task_family",
    "metric_name",
    "model_card",
    "archive_sha256",
    "archive_size_bytes",
    "create_time",
)


def new_model(
    model: model_pb2.Model, *, media_type: str = "application/zip", trainer_artifact_id: str | None = None
) -> NewModel:
    """The record of a model to publish (``archive_sha256`` and ``archive_size_bytes`` must be set;
    ``trainer_artifact_id`` is ``TrainResult.artifact_id``, which Predict hands to the trainer)."""
    details = model_pb2.Model()
    details.CopyFrom(model)
    for name in _MODEL_COLUMNS:
        details.ClearField(name)
    return NewModel(
        job_id=parse_id(model.job_id, "job_id") if model.job_id else None,
        title=model.title,
        prompt=model.prompt,
        task_family=task_family_pb2.TaskFamily.Name(model.task_family),
        metric_name=model.metric_name,
        details=_to_json(details),
        model_card=model.model_card,
        archive_sha256=model.archive_sha256,
        archive_size=model.archive_size_bytes,
        media_type=media_type,
        trainer_artifact_id=trainer_artifact_id or None,
    )


def model_to_proto(model: Model) -> model_pb2.Model:
    message = _from_json(model.details, model_pb2.Model())
    assert isinstance(message, model_pb2.Model)
    message.id = str(model.id)
    if model.job_id is not None:
        message.job_id = str(model.job_id)
    message.title = model.title
    message.prompt = model.prompt
    if model.task_family:
        message.task_family = task_family_pb2.TaskFamily.Value(model.task_family)
    message.metric_name = model.metric_name
    message.model_card = model.model_card
    message.archive_sha256 = model.archive_sha256
    message.archive_size_bytes = model.archive_size
    message.create_time.CopyFrom(_timestamp(model.create_time))
    return message


def task_family_name(value: int) -> str:
    return task_family_pb2.TaskFamily.Name(value)


def predictions_to_proto(predictions: Sequence[Prediction]) -> Sequence[prediction_pb2.Prediction]:
    """The messages of predictions that came as messages (the trainer client's ``WirePredictions``:
    passed on unconverted), else each converted."""
    messages = getattr(predictions, "messages", None)
    if messages is not None:
        return messages  # type: ignore[no-any-return]
    return [prediction_to_proto(p) for p in predictions]


def prediction_to_proto(prediction: Prediction) -> prediction_pb2.Prediction:
    message = prediction_pb2.Prediction(probabilities=dict(prediction.probabilities))
    if prediction.output is not None:
        json_format.ParseDict(prediction.output, message.output)
    return message


# -- datasets and uploads --------------------------------------------------------------------------


def dataset_record_to_proto(record: DatasetRecord) -> dataset_record_pb2.DatasetRecord:
    message = dataset_record_pb2.DatasetRecord(job_id=str(record.job_id), job_prompt=record.job_prompt)
    message.create_time.CopyFrom(_timestamp(record.create_time))
    _from_json(record.payload, message.dataset)
    return message


def upload_to_proto(upload: Upload) -> dataset_record_pb2.UploadedFile:
    message = dataset_record_pb2.UploadedFile(
        upload_id=str(upload.id), filename=upload.filename, size_bytes=upload.size_bytes, sha256=upload.sha256
    )
    message.create_time.CopyFrom(_timestamp(upload.create_time))
    return message


# -- API keys, provider keys, settings ------------------------------------------------------------------


def api_key_to_proto(key: ApiKey) -> account_pb2.ApiKey:
    message = account_pb2.ApiKey(key_id=key.id, label=key.label)
    message.create_time.CopyFrom(_timestamp(key.create_time))
    if key.revoke_time is not None:
        message.revoke_time.CopyFrom(_timestamp(key.revoke_time))
    return message


def provider_of(value: int) -> Provider:
    """The domain provider of a request's enum (protovalidate refuses 0 and unknown numbers first)."""
    try:
        return Provider(account_pb2.Provider.Name(value).removeprefix("PROVIDER_"))
    except ValueError:
        raise InvalidArgument(
            "provider must be GROQ, FIRECRAWL or E2B",
            violations=[FieldViolation("provider", "must be a defined provider", "enum.defined_only")],
        ) from None


def provider_key_to_proto(key: SealedProviderKey) -> account_pb2.ProviderKey:
    """The user's view of a stored key: the provider and the hint, never the secret."""
    message = account_pb2.ProviderKey(
        provider=account_pb2.Provider.Value(f"PROVIDER_{key.provider.value}"), hint=key.hint
    )
    message.update_time.CopyFrom(_timestamp(key.update_time))
    return message


def user_settings_json(settings: account_pb2.UserSettings) -> dict[str, Any]:
    """What to store of new settings (output-only fields dropped; hyperparameters bounded first)."""
    if settings.HasField("default_job_options"):
        check_hyperparameters(settings.default_job_options, "settings.default_job_options")
    inputs = account_pb2.UserSettings()
    inputs.CopyFrom(settings)
    inputs.ClearField("update_time")
    payload = _to_json(inputs)
    _reject_nul(payload, "settings")
    return payload


def user_settings_to_proto(settings: UserSettings) -> account_pb2.UserSettings:
    message = _from_json(settings.settings, account_pb2.UserSettings())
    assert isinstance(message, account_pb2.UserSettings)
    if settings.update_time is not None:
        message.update_time.CopyFrom(_timestamp(settings.update_time))
    return message
