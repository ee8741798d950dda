"""Data tables out of real HTML pages.

- Junk that is not cell text goes first: scripts and styles, footnote references (``<sup
  class="reference">``), hidden sort keys (``class="sortkey"``, ``display:none``), hidden elements.
- Layout tables are not data: navigation boxes, infoboxes, message boxes, ``role="presentation"`` and
  anything inside them; two-column key/value boxes whose rows start with a header cell.
- ``rowspan``/``colspan`` are expanded into a grid (bounded), leading header rows (``<thead>`` or rows
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

from zehanx_crawler.model import RawTable
from zehanx_crawler.values import clean_cell

MIN_ROWS = 10
_MAX_SPAN = 1000
_LAYOUT_CLASSES = re.compile(
    r"(?<![\w-])(infobox|navbox[\w-]*|vertical-navbox|metadata|mbox[\w-]*|ambox|tmbox|sistersitebox|toc|"
    r"sidebar)(?![\w-])",
    re.IGNORECASE,
)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_SUMMARY_CLASSES = re.compile(r"\b(sortbottom|total|summary)\b", re.IGNORECASE)


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


def _is_layout(table: etree._Element) -> str | None:
    if (table.get("role") or "").lower() == "presentation":
        return "layout (role=presentation)"
    cls = table.get("class") or ""
    match = _LAYOUT_CLASSES.search(cls)
    if match:
        return f"layout ({match.group(1).lower()})"
    for ancestor in table.iterancestors("table"):
        if _is_layout(ancestor):
            return "inside a layout table"
    return None


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


def _span(cell: etree._Element, name: str) -> int:
    try:
        return max(1, min(_MAX_SPAN, int((cell.get(name) or "1").strip() or "1")))
    except ValueError:
        return 1


def _grid(rows: list[etree._Element]) -> list[list[tuple[str, bool]]]:
    """Expand spans: each cell is (text, is_header_cell)."""
    grid: list[list[tuple[str, bool] | None]] = []
    pending: dict[tuple[int, int], tuple[str, bool]] = {}
    for r, tr in enumerate(rows):
        line: list[tuple[str, bool] | None] = []
        c = 0
        cells = [cell for cell in tr if getattr(cell, "tag", "") in ("td", "th")]
        for cell in cells:
            while (r, c) in pending:
                line.append(pending.pop((r, c)))
                c += 1
            text = clean_cell(cell.text_content())
            is_th = cell.tag == "th"
            colspan, rowspan = _span(cell, "colspan"), _span(cell, "rowspan")
            for dc in range(colspan):
                line.append((text, is_th))
                for dr in range(1, min(rowspan, len(rows) - r)):
                    pending[(r + dr, c + dc)] = (text, is_th)
            c += colspan
        while (r, c) in pending:
            line.append(pending.pop((r, c)))
            c += 1
        grid.append(line)
    return [[cell or ("", False) for cell in line] for line in grid]


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
    for prev in table.itersiblings(preceding=True):
        if isinstance(prev.tag, str) and re.fullmatch(r"h[1-6]", prev.tag):
            bits.append(clean_cell(prev.text_content()))
            break
    return " ".join(b for b in bits if b)


def _table(table: etree._Element, index: int, uri: str, title: str) -> RawTable | str:
    """A usable table, or why this table is not one."""
    layout = _is_layout(table)
    if layout:
        return layout
    if table.xpath(".//table"):
        return "layout (contains other tables)"
    rows = _own_rows(table)
    if not rows:
        return "empty"
    grid = _grid([tr for tr, _ in rows])
    width = max((len(line) for line in grid), default=0)
    if width < 2:
        return f"{width} column"
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


def parse_html(text: str, uri: str) -> HtmlPage:
    """Every usable data table of a page, reasons for the rest, and the page's links (absolute)."""
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
    for index, table in enumerate(all_tables):
        result = _table(table, index, uri, title)
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
