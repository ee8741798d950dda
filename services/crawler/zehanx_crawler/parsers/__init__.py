"""Any resource to tables: sniff the format, expand archives, decode text, parse."""

from __future__ import annotations

from dataclasses import dataclass, field

from zehanx_runtime.errors import DomainError, FailedPrecondition, ResourceExhausted

from zehanx_crawler.domain import RawTable, Resource
from zehanx_crawler.parsers.archives import ArchiveLimits, expand
from zehanx_crawler.parsers.delimited import parse_delimited
from zehanx_crawler.parsers.html_tables import GridLimits, parse_html
from zehanx_crawler.parsers.structured import parse_json, parse_jsonl, parse_parquet
from zehanx_crawler.sniff import (
    Format,
    binary_format,
    by_content_type,
    by_name,
    is_documentation,
    text_format,
)
from zehanx_crawler.textdecode import decode_text


@dataclass
class Parsed:
    """Tables found in one resource (and its archive members), and what was skipped and why."""

    tables: list[RawTable] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: Links of HTML pages without a usable table, for bounded link following.
    links: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[DomainError] = field(default_factory=list)
    html_pages: int = 0

    def extend(self, other: Parsed) -> None:
        self.tables += other.tables
        self.skipped += other.skipped
        self.links += other.links
        self.notes += other.notes
        self.errors += other.errors
        self.html_pages += other.html_pages


_UNSUPPORTED = {
    Format.XLSX: "an Excel workbook (export it as CSV)",
    Format.PDF: "a PDF document (tables inside PDFs are not extracted)",
}


def parse_resource(resource: Resource, limits: ArchiveLimits, grid: GridLimits | None = None) -> Parsed:
    """Parse one resource. Bombs (archives, HTML spans) and oversized archives raise; other problems are
    collected. Run it in a parsing process (:mod:`zehanx_crawler.parse_pool`): it reads hostile bytes."""
    out = Parsed()
    fmt = binary_format(resource.data, resource.name, resource.content_type)
    if fmt in _UNSUPPORTED:
        error = FailedPrecondition(f"{resource.name} is {_UNSUPPORTED[fmt]}", reason="UNSUPPORTED_FORMAT")
        out.errors.append(error)
        out.skipped.append(f"{resource.uri}: {error.message}")
        return out
    if fmt is not None and fmt.is_archive:
        for member in expand(resource, fmt, limits):
            if is_documentation(member.name):
                out.skipped.append(f"{member.uri}: documentation, not data")
                continue
            out.extend(parse_resource(member, limits, grid))
        if not out.tables and not out.errors and not out.skipped:
            out.errors.append(
                FailedPrecondition(f"{resource.name} is an empty archive", reason="EMPTY_SOURCE")
            )
        return out
    try:
        if fmt == Format.PARQUET:
            table = parse_parquet(resource.data, resource.uri)
            _attach(table, resource)
            out.tables.append(table)
            return out
        hinted_html = (
            by_name(resource.name) == Format.HTML or by_content_type(resource.content_type) == Format.HTML
        )
        decoded = decode_text(resource.data, resource.charset, name=resource.name, html=True)
        fmt = text_format(decoded.text, resource.name, resource.content_type)
        if fmt == Format.HTML or (hinted_html and fmt == Format.DELIMITED and "<" in decoded.text[:2048]):
            page = parse_html(decoded.text, resource.uri, grid)
            out.html_pages += 1
            if page.licence and not resource.licence:
                resource.licence = page.licence
            for table in page.tables:
                table.notes = decoded.notes + table.notes
                _attach(table, resource)
            out.tables += page.tables
            if not page.tables:
                found = f"{page.tables_found} tables found" if page.tables_found else "no <table> at all"
                reasons = "; ".join(page.skipped[:12])
                out.skipped.append(
                    f"{resource.uri}: no usable table ({found}{': ' + reasons if reasons else ''})"
                )
                out.links += page.links
            return out
        if fmt == Format.JSON:
            table = parse_json(decoded.text, resource.uri)
        elif fmt == Format.JSONL:
            table = parse_jsonl(decoded.text, resource.uri)
        else:
            table = parse_delimited(decoded.text, resource.uri)
        table.notes = decoded.notes + table.notes
        _attach(table, resource)
        out.tables.append(table)
    except ResourceExhausted:
        raise
    except DomainError as error:
        out.errors.append(error)
        out.skipped.append(f"{resource.uri}: {error.message}")
    return out


def _attach(table: RawTable, resource: Resource) -> None:
    table.resource = resource
    if not table.context:
        table.context = resource.name
