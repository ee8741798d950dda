"""What is this resource? Magic bytes first, then the name and content type, then the text itself."""

from __future__ import annotations

import enum
import re


class Format(enum.Enum):
    ZIP = "zip"
    TAR = "tar"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    PARQUET = "parquet"
    HTML = "html"
    JSON = "json"
    JSONL = "jsonl"
    DELIMITED = "delimited"
    XLSX = "xlsx"
    PDF = "pdf"
    UNKNOWN = "unknown"

    @property
    def is_archive(self) -> bool:
        return self in (Format.ZIP, Format.TAR, Format.GZIP, Format.BZIP2, Format.XZ)


_EXTENSIONS = [
    (".tar.gz", Format.TAR),
    (".tgz", Format.TAR),
    (".tar.bz2", Format.TAR),
    (".tar.xz", Format.TAR),
    (".tar", Format.TAR),
    (".zip", Format.ZIP),
    (".gz", Format.GZIP),
    (".bz2", Format.BZIP2),
    (".xz", Format.XZ),
    (".parquet", Format.PARQUET),
    (".pq", Format.PARQUET),
    (".html", Format.HTML),
    (".htm", Format.HTML),
    (".jsonl", Format.JSONL),
    (".ndjson", Format.JSONL),
    (".json", Format.JSON),
    (".csv", Format.DELIMITED),
    (".tsv", Format.DELIMITED),
    (".tab", Format.DELIMITED),
    (".txt", Format.DELIMITED),
    (".data", Format.DELIMITED),
    (".xlsx", Format.XLSX),
    (".xls", Format.XLSX),
    (".pdf", Format.PDF),
]

#: File names that are documentation, never data.
_DOC_NAMES = re.compile(
    r"^(readme|read_me|license|licence|copying|notice|citation|changelog|changes|authors|manifest)([._-].*)?$",
    re.IGNORECASE,
)

#: Extensions worth following from a seed page.
DATA_EXTENSIONS = (
    ".csv", ".tsv", ".tab", ".txt", ".json", ".jsonl", ".ndjson", ".parquet", ".pq",
    ".zip", ".tar.gz", ".tgz", ".tar", ".gz", ".bz2", ".xz", ".data",
)  # fmt: skip


def by_name(name: str) -> Format | None:
    lower = name.lower()
    for ext, fmt in _EXTENSIONS:
        if lower.endswith(ext):
            return fmt
    return None


#: Notes beside data files that describe them ("SOURCE.txt" with a dataset's origin and hashes).
_NOTE_NAMES = re.compile(r"^(source|sources|about|description|info|metadata)\.(txt|md|rst)$", re.IGNORECASE)


def is_documentation(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return bool(_DOC_NAMES.match(base) or _NOTE_NAMES.match(base))


def by_magic(data: bytes) -> Format | None:
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        head = data[:65536]
        if b"xl/workbook" in head or (b"[Content_Types].xml" in head and b"xl/" in head):
            return Format.XLSX
        return Format.ZIP
    if data.startswith(b"\x1f\x8b"):
        return Format.GZIP
    if data.startswith(b"BZh"):
        return Format.BZIP2
    if data.startswith(b"\xfd7zXZ\x00"):
        return Format.XZ
    if data.startswith(b"PAR1"):
        return Format.PARQUET
    if len(data) > 262 and data[257:262] == b"ustar":
        return Format.TAR
    if data.startswith(b"%PDF"):
        return Format.PDF
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        return Format.XLSX  # legacy .xls (OLE2)
    return None


_CONTENT_TYPES = {
    "text/html": Format.HTML,
    "application/xhtml+xml": Format.HTML,
    "application/json": Format.JSON,
    "application/x-ndjson": Format.JSONL,
    "application/jsonl": Format.JSONL,
    "application/jsonlines": Format.JSONL,
    "text/csv": Format.DELIMITED,
    "text/tab-separated-values": Format.DELIMITED,
    "application/vnd.apache.parquet": Format.PARQUET,
}


def by_content_type(content_type: str | None) -> Format | None:
    if not content_type:
        return None
    return _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())


_HTML_OPENERS = ("<html", "<head", "<body", "<table")


def starts_as_html(head: str) -> bool:
    """Whitespace and whole ``<!-- comments -->``, then an opening tag (``<!doctype html``, ``<html``,
    ``<head``, ``<body`` or ``<table``), case-insensitively.

    One pass over ``head``, no regular expression: the pattern it replaces,
    ``^\\s*(<!--.*?-->\\s*)*(<!doctype...``, backtracked through every way of splitting a run of comments
    and took days on ``<!---->`` * 40 followed by anything else (H3). A comment ends at its first
    ``-->``, as in HTML.
    """
    i, n = 0, len(head)
    while True:
        while i < n and head[i].isspace():
            i += 1
        if not head.startswith("<!--", i):
            break
        end = head.find("-->", i + 4)
        if end < 0:
            return False
        i = end + 3
    if head[i : i + 9].lower() == "<!doctype":
        rest = head[i + 9 :]
        stripped = rest.lstrip()
        return len(stripped) < len(rest) and stripped[:4].lower() == "html"
    return head[i : i + 6].lower().startswith(_HTML_OPENERS)


def by_text(text: str) -> Format:
    """Classify decoded text: HTML, JSON, JSON Lines or delimited/line text."""
    head = text.lstrip("\ufeff \t\r\n")[:4096]
    if starts_as_html(head) or ("<table" in head.lower() and "</" in head):
        return Format.HTML
    if head.startswith("["):
        return Format.JSON
    if head.startswith("{"):
        first, _, rest = head.partition("\n")
        if rest.lstrip().startswith("{") and first.rstrip().endswith("}"):
            return Format.JSONL
        return Format.JSON
    return Format.DELIMITED


def binary_format(data: bytes, name: str, content_type: str | None) -> Format | None:
    """The format if it is decided by the bytes or a binary name alone; ``None`` means decode as text."""
    magic = by_magic(data)
    if magic is not None:
        return magic
    named = by_name(name)
    if named in (Format.PARQUET, Format.XLSX, Format.PDF):
        return named
    return None


def text_format(text: str, name: str, content_type: str | None) -> Format:
    """The format of decoded text. The content itself wins over a misleading name or content type."""
    sniffed = by_text(text)
    if sniffed in (Format.HTML, Format.JSON, Format.JSONL):
        hinted = by_name(name) or by_content_type(content_type)
        if sniffed == Format.JSON and hinted == Format.JSONL:
            return Format.JSONL
        return sniffed
    return Format.DELIMITED
