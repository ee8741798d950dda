"""The gateway's domain types: jobs, their events, models, users and the calling principal.

Plain dataclasses with no grpc or database imports; :mod:`zehanx_gateway.convert` maps them to and from
the protos and :mod:`zehanx_gateway.store` to and from rows.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from zehanx_runtime.errors import DomainError


class JobState(enum.StrEnum):
    """States of a job; the graph is enforced by the database (see migrations/0001_registry.sql)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING})

#: Legal transitions, mirrored from ``zehanx.legal_transition`` for callers that want to check early.
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.QUEUED, JobState.CANCELLING, JobState.SUCCEEDED, JobState.FAILED}),
    JobState.CANCELLING: frozenset({JobState.CANCELLED, JobState.SUCCEEDED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class JobStage(enum.StrEnum):
    """What a RUNNING job is doing."""

    CRAWLING = "CRAWLING"
    GENERATING = "GENERATING"
    TRAINING = "TRAINING"
    EVALUATING = "EVALUATING"
    PUBLISHING = "PUBLISHING"


class AuthMethod(enum.StrEnum):
    API_KEY = "api_key"
    JWT = "jwt"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user every row they touch must belong to."""

    user_id: uuid.UUID
    method: AuthMethod
    #: The API key id, or the JWT subject.
    credential_id: str
    #: For a JWT, when the user last signed in (epoch seconds; see auth.auth_time_of), else None.
    auth_time: float | None = None


@dataclass(frozen=True, slots=True)
class JobError:
    """Why a job ended FAILED or CANCELLED: a google.rpc code name, a message for the user and an
    UPPER_SNAKE reason (for example ``PROGRAM_FAILED``)."""

    code: str
    message: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class NewJob:
    """What CreateJob asks for, already validated. ``spec`` holds sources and options as JSON."""

    prompt: str
    spec: Mapping[str, Any]
    request_id: uuid.UUID | None
    #: SHA-256 of the request without its request id: a reused request id with another body is refused.
    request_sha256: bytes
    #: The W3C ``traceparent`` of the CreateJob call: the job's trace continues from it.
    trace_parent: str = ""


@dataclass(frozen=True, slots=True)
class Job:
    id: uuid.UUID
    user_id: uuid.UUID
    request_id: uuid.UUID | None
    prompt: str
    spec: Mapping[str, Any]
    state: JobState
    stage: JobStage | None
    error: JobError | None
    model_id: uuid.UUID | None
    dataset_id: str | None
    repair_count: int
    last_sequence: int
    version: int
    attempt: int
    lease_owner: str | None
    lease_expire_time: datetime | None
    create_time: datetime
    update_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    #: The W3C ``traceparent`` the job's trace continues from ("" for jobs made before traces).
    trace_parent: str = ""

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    @property
    def trace_id(self) -> str:
        """The job's 32-hex trace id, or ""."""
        parts = self.trace_parent.split("-")
        return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One persisted event of a job. ``kind`` names the event (``state_change``, ``log_line``, ...)."""

    job_id: uuid.UUID
    sequence: int
    event_time: datetime
    kind: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    #: The job's stage when the event was written.
    stage: JobStage | None = None

    @property
    def ends_stream(self) -> bool:
        """True for the state change that makes the job terminal: WatchJob ends after it."""
        if self.kind != STATE_CHANGE:
            return False
        to_state = self.payload.get("to_state")
        return to_state in {s.value for s in TERMINAL_STATES}


STATE_CHANGE = "state_change"


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event not yet written: the store assigns its sequence number."""

    job_id: uuid.UUID
    kind: str
    payload: Mapping[str, Any]
    event_time: datetime | None = None
    #: A worker's (owner, attempt): the event is written only while that worker still holds the job's
    #: lease (ABORTED otherwise), so a worker that lost its job cannot add to its history.
    lease: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class NewModel:
    """A model to record. ``details`` is the rest of the record (plan, class labels, metrics,
    baseline, provenance, dataset id, weights checksum) as JSON."""

    job_id: uuid.UUID | None
    title: str
    prompt: str
    task_family: str
    metric_name: str
    details: Mapping[str, Any]
    model_card: str
    archive_sha256: str
    archive_size: int
    media_type: str = "application/zip"
    #: The trainer's id of the stored artifact (``TrainResult.artifact_id``); Predict needs it.
    trainer_artifact_id: str | None = None


@dataclass(frozen=True, slots=True)
class Model:
    id: uuid.UUID
    user_id: uuid.UUID
    job_id: uuid.UUID | None
    title: str
    prompt: str
    task_family: str
    metric_name: str
    details: Mapping[str, Any]
    model_card: str
    archive_sha256: str
    archive_size: int
    media_type: str
    create_time: datetime
    trainer_artifact_id: str | None = None


@dataclass(frozen=True, slots=True)
class Prediction:
    """One prediction: the output (JSON value) and, for classification, each label's probability."""

    output: Any
    probabilities: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class PredictResult:
    """What a model answered: one prediction per instance, how long it took at the trainer, whether the
    model's resident predictor answered (``warm``; cold: its process was started for this call) and
    whether that start replaced a crashed predictor (``restarted``)."""

    predictions: Sequence[Prediction]
    duration_s: float
    warm: bool = False
    restarted: bool = False
    #: The predictions as JSON lines, when the instances came as :class:`InstancesJsonl`
    #: (``predictions`` is then empty).
    predictions_jsonl: bytes = b""

    @property
    def count(self) -> int:
        return self.predictions_jsonl.count(b"\n") if self.predictions_jsonl else len(self.predictions)


@dataclass(frozen=True, slots=True)
class InstancesJsonl:
    """A batch of instances as UTF-8 JSON lines, one instance a line, passed on to the model as it
    came (the trainer parses it once; no conversion per value on the way)."""

    data: bytes
    count: int

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    user_id: uuid.UUID
    user_name: str | None
    label: str
    create_time: datetime
    revoke_time: datetime | None


@dataclass(frozen=True, slots=True)
class StoredApiKey:
    """What the API-key check reads of a key: its owner, its secret's SHA-256 and when it was revoked."""

    user_id: uuid.UUID
    secret_sha256: bytes
    revoke_time: datetime | None


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    """The dataset a job built: its ``dataset_built`` event (payload as stored) and the job's prompt."""

    job_id: uuid.UUID
    job_prompt: str
    create_time: datetime
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Upload:
    """A file a user uploaded to use as a job source. The bytes are in the upload folder."""

    id: uuid.UUID
    user_id: uuid.UUID
    filename: str
    size_bytes: int
    sha256: str
    create_time: datetime


class Provider(enum.StrEnum):
    """A cloud service whose key a user may store (``zehanx.gateway.v1.Provider``)."""

    GROQ = "GROQ"
    FIRECRAWL = "FIRECRAWL"
    E2B = "E2B"


@dataclass(frozen=True, slots=True)
class SealedProviderKey:
    """A stored provider key: sealed (AES-256-GCM) with its nonce, and the hint shown to its owner."""

    user_id: uuid.UUID
    provider: Provider
    nonce: bytes
    sealed: bytes
    hint: str
    update_time: datetime


@dataclass(frozen=True, slots=True)
class UserSettings:
    """A user's settings as stored (the JSON form of ``UserSettings``); ``update_time`` None: never set."""

    settings: Mapping[str, Any]
    update_time: datetime | None


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list and the token of the next (empty at the end)."""

    items: list[T]
    next_page_token: str


class DataLoss(DomainError):
    """Stored bytes no longer match their checksum (maps to DATA_LOSS)."""

    code = "DATA_LOSS"
    default_reason = "DATA_LOSS"


class OutOfRange(DomainError):
    """A position past the end (maps to OUT_OF_RANGE)."""

    code = "OUT_OF_RANGE"
    default_reason = "OUT_OF_RANGE"
