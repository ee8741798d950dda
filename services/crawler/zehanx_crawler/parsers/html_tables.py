"""Data tables out of real HTML pages.

- Junk that is not cell text goes first: scripts and styles, footnote references (``<sup
  class="reference">``), hidden sort keys (``class="sortkey"``, ``display:none``), hidden elements.
- Layout tables are not data: navigation boxes, infoboxes, message boxes, ``role="presentation"`` and
  anything inside them; two-column key/value boxes whose rows start with a header cell.
- ``rowspan``/``colspan`` are expanded into a grid, under caps checked while it grows: a span is at
  most 1000 (``colspan`` also at most ``max_columns``, ``rowspan`` at most the rows left), a table
  wider than ``max_columns`` is skipped as soon as a row gets there, and a page whose tables expand
  past ``max_cells`` cells in all is refused as a span bomb (11 KiB of spans once made 2 GiB). Leading
  header rows (``<thead>`` or rows
  of ``<th>``) are joined into one name per column (``"Land area / sq mi"``), summary rows
  (``<tfoot>``, ``class="sortbottom"``) and repeated header rows are dropped and counted.
- A table needs :data:`MIN_ROWS` data rows and two columns to be usable; when none is, the caller hears
  why for each table found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urldefrag, urljoin

import lxml.html
from lxml import etree
from zehanx_runtime.errors import ResourceExhausted

from zehanx_crawler.domain import RawTable
from zehanx_crawler.values import clean_cell

MIN_ROWS = 10
_MAX_SPAN = 1000
#: Preceding siblings searched for a table's heading (a page of a million tables must not scan them all).
_HEADING_LOOKBACK = 64
_LAYOUT_CLASSES = re.compile(
    r"(?<![\w-])(infobox|navbox[\w-]*|vertical-navbox|metadata|mbox[\w-]*|ambox|tmbox|sistersitebox|toc|"
    r"sidebar)(?![\w-])",
    re.IGNORECASE,
)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_SUMMARY_CLASSES = re.compile(r"\b(sortbottom|total|summary)\b", re.IGNORECASE)


@dataclass(frozen=True)
class GridLimits:
    """Caps on expanding ``colspan``/``rowspan``."""

    #: Columns of one table, at most (a wider table is skipped: cleaning would refuse it anyway).
    max_columns: int = 10_000
    #: Cells of all the tables of one page together, after expanding spans and padding short rows.
    max_cells: int = 10_000_000


class _CellBudget:
    def __init__(self, uri: str, limit: int) -> None:
        self.uri = uri
        self.limit = limit
        self.used = 0

    def charge(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise ResourceExhausted(
                f"{self.uri}: its tables' colspan/rowspan expand past {self.limit} cells "
                "(ZX_CRAWLER_MAX_HTML_CELLS); refused as a span bomb",
                reason="HTML_TABLE_TOO_LARGE",
                metadata={"source": self.uri, "limit_cells": str(self.limit)},
            )


class _TooWide(Exception):
    pass


@dataclass
class HtmlPage:
    """What an HTML page holds: usable tables, why the other tables were skipped, and its links."""

    title: str
    tables: list[RawTable]
    skipped: list[str]
    links: list[str] = field(default_factory=list)
    tables_found: int = 0
    #: What the page states about its licence (``rel="license"`` links), or "".
    licence: str = ""


def _own_layout(table: etree._Element) -> str | None:
    """Why this table's own attributes mark it as layout, or ``None``."""
    if (table.get("role") or "").lower() == "presentation":
        return "layout (role=presentation)"
    cls = table.get("class") or ""
    match = _LAYOUT_CLASSES.search(cls)
    if match:
        return f"layout ({match.group(1).lower()})"
    return None


def _layouts(tables: list[etree._Element]) -> tuple[dict[etree._Element, str], set[etree._Element]]:
    """Why each layout table is layout (its own attributes, or inside a layout table), and the tables
    that hold other tables, in one pass over ``tables`` in document order (outer tables first).

    Each table looks only at its nearest enclosing table, whose answer is already known. (A check that
    asked every ancestor whether it was layout, recursively, took 2^depth steps: seconds for 18
    nested tables in 300 bytes; an xpath per table for nested tables was quadratic.)
    """
    layout: dict[etree._Element, str] = {}
    holders: set[etree._Element] = set()
    for table in tables:
        parent = next(table.iterancestors("table"), None)
        if parent is not None:
            holders.add(parent)
        own = _own_layout(table)
        if own:
            layout[table] = own
        elif parent is not None and parent in layout:
            layout[table] = "inside a layout table"
    return layout, holders


def _strip_junk(doc: etree._Element) -> None:
    """Drop what a reader never sees as cell text; the text after a dropped element stays."""
    for el in doc.xpath("//script|//style|//noscript|//template"):
        el.drop_tree()
    junk = []
    for el in doc.iter():
        if not isinstance(el.tag, str):
            continue
        classes = set((el.get("class") or "").split())
        if (
            (el.tag == "sup" and "reference" in classes)
            or "sortkey" in classes
            or el.get("hidden") is not None
            or _HIDDEN_STYLE.search(el.get("style") or "")
        ):
            junk.append(el)
    for el in junk:
        el.drop_tree()
    for br in doc.xpath("//br"):
        br.tail = " " + (br.tail or "")


def _own_rows(table: etree._Element) -> list[tuple[etree._Element, str]]:
    """The table's own ``<tr>`` elements (not nested tables'), with the section each is in."""
    rows: list[tuple[etree._Element, str]] = []
    for child in table:
        tag = child.tag if isinstance(child.tag, str) else ""
        if tag in ("thead", "tbody", "tfoot"):
            rows += [(tr, tag) for tr in child if getattr(tr, "tag", "") == "tr"]
        elif tag == "tr":
            rows.append((child, "tbody"))
    return rows


def _span(cell: etree._Element, name: str, most: int) -> int:
    raw = (cell.get(name) or "1").strip()[:12]
    try:
        return max(1, min(_MAX_SPAN, most, int(raw or "1")))
    except ValueError:
        return 1


def _fill_carried(
    line: list[tuple[str, bool]],
    carried: list[tuple[int, tuple[str, bool]] | None],
    r: int,
    budget: _CellBudget,
) -> None:
    """Append to row ``r``'s ``line`` the cells that rowspans above carry into its next columns (charged
    to ``budget`` before they are appended)."""
    end = len(line)
    while end < len(carried):
        held = carried[end]
        if held is None or held[0] <= r:
            break
        end += 1
    budget.charge(end - len(line))
    line.extend(held[1] for held in carried[len(line) : end] if held is not None)


def _grid(rows: list[etree._Element], max_columns: int, budget: _CellBudget) -> list[list[tuple[str, bool]]]:
    """Expand spans: each cell is (text, is_header_cell).

    A cell's ``rowspan`` reaches at most the last row and its ``colspan`` at most ``max_columns``. A
    spanning cell is remembered once per column it covers (with the row it lasts until), not once per
    covered cell, and every cell put into the grid is charged to ``budget`` as it is put there; a row
    wider than ``max_columns`` raises :class:`_TooWide` at once. Where spans overlap, the later cell wins.
    """
    grid: list[list[tuple[str, bool]]] = []
    #: Per column: (first row no longer covered, the cell) of the rowspan reaching down through it.
    carried: list[tuple[int, tuple[str, bool]] | None] = []
    n_rows = len(rows)
    for r, tr in enumerate(rows):
        line: list[tuple[str, bool]] = []
        for cell in tr:
            if getattr(cell, "tag", "") not in ("td", "th"):
                continue
            _fill_carried(line, carried, r, budget)
            c = len(line)
            colspan = _span(cell, "colspan", max_columns)
            if c + colspan > max_columns:
                raise _TooWide(c + colspan)
            rowspan = _span(cell, "rowspan", n_rows - r)
            budget.charge(colspan)
            value = (clean_cell(cell.text_content()), cell.tag == "th")
            line.extend([value] * colspan)
            if len(carried) < c + colspan:
                carried.extend([None] * (c + colspan - len(carried)))
            if rowspan > 1:
                for dc in range(colspan):
                    carried[c + dc] = (r + rowspan, value)
        _fill_carried(line, carried, r, budget)
        grid.append(line)
    return grid


def _header_names(header_rows: list[list[tuple[str, bool]]], width: int) -> list[str]:
    names: list[str] = []
    for j in range(width):
        parts: list[str] = []
        for row in header_rows:
            text = row[j][0] if j < len(row) else ""
            if text and (not parts or parts[-1] != text):
                parts.append(text)
        names.append(" / ".join(parts))
    return names


def _context(table: etree._Element, title: str) -> str:
    bits = [title]
    caption = table.find("caption")
    if caption is not None:
        bits.append(clean_cell(caption.text_content()))
    for n, prev in enumerate(table.itersiblings(preceding=True)):
        if n >= _HEADING_LOOKBACK:
            break
        if isinstance(prev.tag, str) and re.fullmatch(r"h[1-6]", prev.tag):
            bits.append(clean_cell(prev.text_content()))
            break
    return " ".join(b for b in bits if b)


def _table(
    table: etree._Element,
    index: int,
    uri: str,
    title: str,
    *,
    layout: str | None,
    holds_tables: bool,
    limits: GridLimits,
    budget: _CellBudget,
) -> RawTable | str:
    """A usable table, or why this table is not one."""
    if layout:
        return layout
    if holds_tables:
        return "layout (contains other tables)"
    rows = _own_rows(table)
    if not rows:
        return "empty"
    try:
        grid = _grid([tr for tr, _ in rows], limits.max_columns, budget)
    except _TooWide as exc:
        return (
            f"{exc.args[0]} or more columns once colspan/rowspan are expanded; at most {limits.max_columns} "
            "are accepted (ZX_CRAWLER_MAX_COLUMNS)"
        )
    width = max((len(line) for line in grid), default=0)
    if width < 2:
        return f"{width} column"
    # Short rows are padded to the width below: charge the padding before it is made.
    budget.charge(sum(width - len(line) for line in grid))
    n_header = 0
    for (_tr, section), line in zip(rows, grid, strict=True):
        if section == "thead" or (line and all(is_th for _, is_th in line)):
            n_header += 1
        else:
            break
    header = grid[:n_header]
    names = _header_names(header, width) if header else [f"column_{i + 1}" for i in range(width)]
    last_header = ([t for t, _ in header[-1]] + [""] * width)[:width] if header else None
    data: list[list[str]] = []
    summary = repeats = 0
    key_value = 0
    for (tr, section), line in zip(rows[n_header:], grid[n_header:], strict=True):
        texts = [text for text, _ in line] + [""] * (width - len(line))
        if not any(texts):
            continue
        if section == "tfoot" or _SUMMARY_CLASSES.search(tr.get("class") or ""):
            summary += 1
            continue
        if header and texts == last_header:
            repeats += 1
            continue
        if width == 2 and line and line[0][1] and not line[-1][1]:
            key_value += 1
        data.append(texts)
    if data and key_value == len(data) and not header:
        return "key/value box (every row starts with a header cell)"
    if len(data) < MIN_ROWS:
        return f"{len(data)} data rows (a usable table needs {MIN_ROWS})"
    notes = []
    origin = f"{uri}#table-{index + 1}"
    if summary:
        notes.append(f"{origin}: dropped {summary} summary rows (totals)")
    if repeats:
        notes.append(f"{origin}: dropped {repeats} repeated header rows")
    if len(header) > 1:
        notes.append(f"{origin}: {len(header)} header rows joined into one name per column")
    return RawTable(
        columns=names,
        rows=data,
        origin=origin,
        format="html-table",
        notes=notes,
        invented_header=not header,
        context=_context(table, title),
        title=title,
        dropped_rows=summary + repeats,
    )


def parse_html(text: str, uri: str, limits: GridLimits | None = None) -> HtmlPage:
    """Every usable data table of a page, reasons for the rest, and the page's links (absolute).

    Raises :class:`ResourceExhausted` when the page's tables expand past ``limits.max_cells`` cells."""
    limits = limits or GridLimits()
    try:
        doc = lxml.html.document_fromstring(
            text.encode("utf-8", "surrogatepass"), parser=lxml.html.HTMLParser(encoding="utf-8")
        )
    except (etree.ParserError, ValueError) as exc:
        return HtmlPage(title="", tables=[], skipped=[f"unparseable HTML: {exc}"])
    title_el = doc.find(".//title")
    title = clean_cell(title_el.text_content()) if title_el is not None else ""
    base = uri
    base_el = doc.find(".//base[@href]")
    if base_el is not None:
        base = urljoin(uri, base_el.get("href") or "")
    links: list[str] = []
    seen: set[str] = set()
    for a in doc.xpath("//a[@href]"):
        href = (a.get("href") or "").strip()
        if not href or href.startswith(("#", "javascript:", "mailto:")):
            continue
        absolute = urldefrag(urljoin(base, href))[0]
        if absolute not in seen:
            seen.add(absolute)
            links.append(absolute)
    licence = _licence(doc, base)
    _strip_junk(doc)
    tables: list[RawTable] = []
    skipped: list[str] = []
    all_tables = doc.xpath("//table")
    layouts, holders = _layouts(all_tables)
    budget = _CellBudget(uri, limits.max_cells)
    for index, table in enumerate(all_tables):
        result = _table(
            table,
            index,
            uri,
            title,
            layout=layouts.get(table),
            holds_tables=table in holders,
            limits=limits,
            budget=budget,
        )
        if isinstance(result, str):
            skipped.append(f"table {index + 1}: {result}")
        else:
            tables.append(result)
    return HtmlPage(
        title=title,
        tables=tables,
        skipped=skipped,
        links=links,
        tables_found=len(all_tables),
        licence=licence,
    )


def _licence(doc: etree._Element, base: str) -> str:
    texts: list[str] = []
    hrefs: list[str] = []
    for el in doc.xpath("//*[@rel]"):
        if "license" not in (el.get("rel") or "").lower().split():
            continue
        text = clean_cell(el.text_content()) if el.tag == "a" else ""
        href = urljoin(base, el.get("href") or "") if el.get("href") else ""
        if text and text not in texts:
            texts.append(text)
        if href and href not in hrefs:
            hrefs.append(href)
    if not texts and not hrefs:
        return ""
    preferred = [h for h in hrefs if "creativecommons.org/" in h] or hrefs
    return " ".join(filter(None, [texts[0] if texts else "", f"({preferred[0]})" if preferred else ""]))
