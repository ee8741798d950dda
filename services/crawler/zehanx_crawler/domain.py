"""The crawler's domain values: sources, fetched resources, parsed tables, options, events, the dataset.

Plain dataclasses, no grpc: the servicer converts protobuf messages to and from these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from zehanx_runtime.tasks import TaskFamily  # the crawler decides it (task.choose)


class SourceKind(enum.Enum):
    URL = "url"
    LOCAL_PATH = "local_path"
    CATALOGUE = "catalogue"
    UPLOAD = "upload"


@dataclass(frozen=True)
class Source:
    """One source named in a request: a URL, a local file or folder, or a catalogue name."""

    kind: SourceKind
    value: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.value}"


class Phase(enum.Enum):
    SEARCHING = "searching"
    FETCHING = "fetching"
    PARSING = "parsing"
    CLEANING = "cleaning"
    SPLITTING = "splitting"
    PROFILING = "profiling"
    STORING = "storing"


@dataclass(frozen=True)
class Progress:
    """One progress event of a build."""

    phase: Phase
    message: str
    bytes_done: int = 0
    rows_done: int = 0
    source: str = ""


@dataclass
class Resource:
    """Bytes from one place (a download, a file, an archive member, a catalogue loader) with their origin."""

    uri: str
    name: str
    data: bytes
    content_type: str | None = None
    charset: str | None = None
    fetched_at: datetime | None = None
    sha256: str = ""
    licence: str = ""
    #: For archive members: the archive's URI; provenance names the outer source.
    parent_uri: str = ""
    depth: int = 0
    #: The request source this resource was reached from (``url:https://...``).
    source: str = ""
    #: ``len(data)`` when ``data`` was left behind (a parsing process returns tables whose resource
    #: carries only its description); ``None`` while ``data`` is here.
    size: int | None = None

    @property
    def n_bytes(self) -> int:
        return len(self.data) if self.size is None else self.size


@dataclass
class RawTable:
    """A table as parsed, before typing: header names and rows of raw values (mostly strings)."""

    columns: list[str]
    rows: list[list[Any]]
    origin: str
    format: str
    notes: list[str] = field(default_factory=list)
    #: True when the source had no header and the names were invented.
    invented_header: bool = False
    #: Free text near the table (caption, file name, page title) for ranking against the prompt.
    context: str = ""
    #: Title of the page or dataset the table came from, when known.
    title: str = ""
    resource: Resource | None = None
    #: Rows dropped by the parser itself (summary rows of an HTML table); reported, never silent.
    dropped_rows: int = 0
    #: Where the rows are while a build runs, when a parsing process kept them out of this process
    #: (``rows`` is empty then and ``row_count`` counts them).
    rows_file: str = ""
    row_count: int = 0

    @property
    def n_rows(self) -> int:
        return self.row_count if self.rows_file else len(self.rows)


@dataclass(frozen=True)
class BuildOptions:
    """Request options, already validated by the contract; ``None`` means the service default."""

    seed: int | None = None
    train_fraction: float = 0.8
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    max_rows: int | None = None
    max_bytes: int | None = None
    target_column: str | None = None
    task: TaskFamily | None = None


@dataclass(frozen=True)
class BuildRequest:
    prompt: str
    sources: tuple[Source, ...] = ()
    options: BuildOptions = BuildOptions()
    job_id: str = ""
    #: The job owner's own Firecrawl key (sent by the gateway), used for this build instead of the
    #: configured one. A secret: kept out of repr, so never in a log line.
    firecrawl_api_key: str | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ProvenanceRecord:
    """Where one piece of the dataset came from."""

    source: str
    uri: str
    fetched_at: datetime
    sha256: str
    bytes: int
    licence: str = ""
    content_type: str = ""
    title: str = ""
    description: str = ""


@dataclass(frozen=True)
class SplitFiles:
    """One split file in the store."""

    name: str
    uri: str
    path: str
    rows: int
    sha256: str
    bytes: int


@dataclass
class BuiltDataset:
    """The result of a build: what was stored, and why it looks the way it does."""

    id: str
    sha256: str
    name: str
    task: TaskFamily
    target: str
    inputs: list[str]
    explanation: str
    directory: str
    schema_uri: str
    schema: dict[str, Any]
    profile: dict[str, Any]
    provenance: list[ProvenanceRecord]
    splits: dict[str, SplitFiles]
    seed: int
    fractions: tuple[float, float, float]
    notes: list[str]
    created_at: datetime
    dropped_rows: int = 0
    reused: bool = False
