"""BuildDataset, end to end: find candidates, fetch, parse, choose, clean, split, profile, store.

The build runs in its own task and reports through a queue, so its time budget never fires inside the
caller's code and a caller that goes away cancels it. Parsing and cleaning, which read bytes from the
outside world, run in parsing processes (:mod:`zehanx_crawler.parse_pool`) that are killed when the build
ends for any reason, so a stuck parse cannot outlive its job; their tables' rows stay in files of the
build's work folder until the chosen ones are cleaned. Splitting, profiling and storing run in worker
threads so the server's event loop keeps answering (health checks, other builds).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import math
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from zehanx_runtime.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)

from zehanx_crawler import cleaning, parse_worker, profiling, splitting, task
from zehanx_crawler.catalogue import Catalogue
from zehanx_crawler.domain import (
    BuildRequest,
    BuiltDataset,
    Phase,
    Progress,
    ProvenanceRecord,
    RawTable,
    Resource,
    Source,
    SourceKind,
)
from zehanx_crawler.fetcher import Fetcher, human_bytes
from zehanx_crawler.localpaths import is_allowed, resolve_local_path
from zehanx_crawler.parse_pool import ParsePool
from zehanx_crawler.parsers import Parsed
from zehanx_crawler.parsers.archives import ArchiveLimits
from zehanx_crawler.parsers.html_tables import GridLimits
from zehanx_crawler.ranking import content_tokens, match
from zehanx_crawler.settings import CrawlerSettings
from zehanx_crawler.sniff import DATA_EXTENSIONS, is_documentation
from zehanx_crawler.store import DatasetStore
from zehanx_crawler.uploads import UploadInbox, upload_label
from zehanx_crawler.web import WebBackend, raw_file_url

Emit = Callable[[Progress], Awaitable[None]]

#: The running build's work folder (parsed rows wait there to be cleaned); removed when the build ends.
_WORK_FOLDER: ContextVar[Path] = ContextVar("crawler_work_folder")


class _ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, n: int, what: str) -> None:
        self.used += n
        if self.used > self.limit:
            raise ResourceExhausted(
                f"reading {what} brings this build past its {human_bytes(self.limit)} budget "
                "(ZX_CRAWLER_MAX_TOTAL_BYTES, or the request's max_bytes)",
                reason="BUILD_TOO_LARGE",
                metadata={"limit_bytes": str(self.limit)},
            )

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass
class _Choice:
    tables: list[RawTable]
    why: str
    others: list[str]


def _short(items: list[str], limit: int = 8) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def _is_data_link(url: str, seed_url: str) -> bool:
    """A link worth fetching from a seed page: a data file on any host, by its extension (a catalogue page
    such as catalog.data.gov links its files on the agency's host, a README links raw.githubusercontent.com;
    every fetch still goes through the egress guard and counts against the page and byte limits), or, on
    the seed's own host, a file without an extension inside the seed's folder (a directory listing of
    ``SMSSpamCollection``...)."""
    parts = urlsplit(url)
    seed = urlsplit(seed_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    path = parts.path.lower()
    name = path.rsplit("/", 1)[-1]
    if not name or is_documentation(name):
        return False
    if path.endswith(DATA_EXTENSIONS):
        return True
    folder = seed.path.rsplit("/", 1)[0] + "/"
    return (
        parts.hostname == seed.hostname
        and "." not in name
        and parts.path.startswith(folder)
        and parts.path != seed.path
    )


class DatasetBuilder:
    """Turns a :class:`BuildRequest` into a stored dataset, streaming :class:`Progress` on the way."""

    def __init__(
        self,
        settings: CrawlerSettings,
        *,
        fetcher: Fetcher,
        catalogue: Catalogue,
        store: DatasetStore,
        uploads: UploadInbox | None = None,
        web: WebBackend | None = None,
        web_for_key: Callable[[str], WebBackend] | None = None,
        parse_pool: ParsePool | None = None,
    ) -> None:
        self._settings = settings
        #: Users' uploads as the gateway sent them (PutSourceFile), read by ``upload_id``.
        self._uploads = uploads
        #: Where bytes from outside are parsed and cleaned (shared by the copies of this builder).
        self._pool = parse_pool or ParsePool(
            processes=settings.parse_processes, memory_bytes=settings.parse_memory_bytes
        )
        #: The web backend on a caller's own key (a job owner's Firecrawl key), for one build.
        self._web_for_key = web_for_key
        self._fetcher = fetcher
        self._catalogue = catalogue
        self._store = store
        self._web = web
        self._limits = ArchiveLimits(
            max_bytes=settings.max_uncompressed_bytes,
            max_members=settings.max_archive_members,
            max_ratio=settings.max_compression_ratio,
            max_depth=settings.max_archive_depth,
        )
        self._grid = GridLimits(
            max_columns=settings.max_columns,
            max_cells=min(settings.max_html_cells, settings.max_rows * settings.max_columns),
        )

    @property
    def parse_pool(self) -> ParsePool:
        return self._pool

    async def close(self) -> None:
        """Stop the parsing processes."""
        await self._pool.close()

    # -- the stream -------------------------------------------------------------------------------

    async def build(self, request: BuildRequest) -> AsyncIterator[Progress | BuiltDataset]:
        """Progress events, then the dataset. Errors are raised as domain errors."""
        queue: asyncio.Queue[Progress | BuiltDataset | BaseException] = asyncio.Queue()

        async def emit(event: Progress) -> None:
            await queue.put(event)

        builder = self._for_caller(request)

        async def run() -> None:
            try:
                async with asyncio.timeout(self._settings.build_timeout_s):
                    result = await builder._build(request, emit)
                await queue.put(result)
            except TimeoutError:
                await queue.put(
                    DeadlineExceeded(
                        f"the build did not finish within {self._settings.build_timeout_s:.0f} s "
                        "(ZX_CRAWLER_BUILD_TIMEOUT_S)",
                        reason="BUILD_TIMEOUT",
                    )
                )
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                await queue.put(exc)

        worker = asyncio.create_task(run(), name="build-dataset")
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, BuiltDataset):
                    return
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    def _for_caller(self, request: BuildRequest) -> DatasetBuilder:
        """This builder, or for a request carrying its owner's Firecrawl key, a copy whose web backend
        is Firecrawl on that key (whatever backend is configured: the user asked for it)."""
        if not request.firecrawl_api_key or self._web_for_key is None:
            return self
        builder = copy.copy(self)
        builder._web = self._web_for_key(request.firecrawl_api_key)
        return builder

    # -- the build --------------------------------------------------------------------------------

    async def _build(self, request: BuildRequest, emit: Emit) -> BuiltDataset:
        folder = self._settings.datasets_dir / f".parse-{uuid.uuid4().hex}"
        folder.mkdir(parents=True)
        token = _WORK_FOLDER.set(folder)
        try:
            return await self._build_in_folder(request, emit)
        finally:
            _WORK_FOLDER.reset(token)
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)

    async def _build_in_folder(self, request: BuildRequest, emit: Emit) -> BuiltDataset:
        options = request.options
        budget = _ByteBudget(
            min(self._settings.max_total_bytes, options.max_bytes or self._settings.max_total_bytes)
        )
        found = Parsed()
        if request.sources:
            for source in request.sources:
                found.extend(await self._collect(source, request.prompt, emit, budget))
            why_sources = "the request's sources"
        else:
            why_sources = await self._search(request.prompt, emit, budget, found)

        choice = self._choose_tables(found, request.prompt)
        rows_in = sum(t.n_rows for t in choice.tables)
        raw_rows = sum(t.n_rows + t.dropped_rows for t in choice.tables)
        await emit(
            Progress(
                Phase.CLEANING,
                f"cleaning {rows_in} rows x {len(choice.tables[0].columns)} columns",
                budget.used,
                rows_in,
            )
        )
        # The parsing process reads the parsed rows back from their files; only the typed table returns.
        # (Catalogue tables carry their rows; no table needs its source's bytes to be cleaned.)
        sent = [
            replace(t, resource=parse_worker.described(t.resource)) if t.resource is not None else t
            for t in choice.tables
        ]
        table = await self._pool.run(
            parse_worker.clean, sent, self._settings.max_columns, what=choice.tables[0].origin
        )
        picked = task.choose(table, request.prompt, target_hint=options.target_column, task_hint=options.task)
        table = task.apply(table, picked)
        seed = options.seed if options.seed is not None else self._settings.default_seed
        table = self._cap_rows(table, picked, options.max_rows, seed)
        await emit(
            Progress(
                Phase.CLEANING,
                f"{picked.task.value}, target {picked.target!r}: {table.n_rows} rows",
                budget.used,
                table.n_rows,
            )
        )

        fractions = (options.train_fraction, options.validation_fraction, options.test_fraction)
        target_values = table.get(picked.target).values
        groups = await asyncio.to_thread(self._groups, table, picked.target)
        split = await asyncio.to_thread(
            splitting.split,
            target_values if picked.task.is_classification else None,
            table.n_rows,
            picked.task,
            fractions,
            seed,
            groups,
        )
        sizes = {k: len(v) for k, v in split.indices.items()}
        await emit(
            Progress(
                Phase.SPLITTING,
                f"{split.method} split, seed {seed}: train {sizes['train']}, "
                f"validation {sizes['validation']}, test {sizes['test']}",
                budget.used,
                table.n_rows,
            )
        )

        profile = await asyncio.to_thread(profiling.profile, table, picked, split)
        await emit(
            Progress(
                Phase.PROFILING,
                f"profiled {table.n_rows} rows, {len(table.columns)} columns",
                budget.used,
                table.n_rows,
            )
        )

        created = datetime.now(UTC)
        provenance = self._provenance(choice.tables)
        name = self._name(choice.tables)
        notes = list(table.notes)
        if profile["duplicate_rows"]:
            notes.append(
                f"{profile['duplicate_rows']} rows repeat an earlier row; kept as in the source, and identical "
                "inputs were kept in the same split"
            )
        if choice.others:
            notes.append("also found, not used: " + _short(choice.others, 5))
        dropped = max(0, raw_rows - table.n_rows)
        explanation = (
            (
                f"Data from {why_sources}: {choice.why}. {picked.explanation} Rows split {split.method}ly "
                f"with seed {seed} into train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']}."
            )
            .replace("randomly", "at random")
            .replace("stratifiedly", "stratified by class")
            .replace("temporally", "in time order")
        )
        record = {
            "name": name,
            "prompt": request.prompt,
            "job_id": request.job_id,
            "created_at": created.isoformat(),
            "explanation": explanation,
            "notes": notes,
            "dropped_rows": dropped,
            "sources": [
                {
                    "source": p.source,
                    "uri": p.uri,
                    "fetched_at": p.fetched_at.isoformat(),
                    "sha256": p.sha256,
                    "bytes": p.bytes,
                    "licence": p.licence,
                    "content_type": p.content_type,
                    "title": p.title,
                    "description": p.description,
                }
                for p in provenance
            ],
        }
        await emit(
            Progress(
                Phase.STORING, f"writing {table.n_rows} rows to the dataset store", budget.used, table.n_rows
            )
        )
        stored = await asyncio.to_thread(self._store.save, table, picked, split, profile, record)
        return BuiltDataset(
            id=stored.id,
            sha256=stored.sha256,
            name=name,
            task=picked.task,
            target=picked.target,
            inputs=list(picked.inputs),
            explanation=explanation,
            directory=str(stored.directory),
            schema_uri=(stored.directory / "schema.json").as_uri(),
            schema=stored.schema,
            profile=profile,
            provenance=provenance,
            splits=stored.splits,
            seed=seed,
            fractions=fractions,
            notes=notes,
            created_at=created,
            dropped_rows=dropped,
            reused=stored.reused,
        )

    # -- finding data -----------------------------------------------------------------------------

    async def _search(self, prompt: str, emit: Emit, budget: _ByteBudget, found: Parsed) -> str:
        await emit(Progress(Phase.SEARCHING, "matching the prompt against the built-in catalogue"))
        ranked = self._catalogue.rank(prompt)
        if ranked:
            best = ranked[0]
            words = ", ".join(best.match.words)
            others = ", ".join(r.entry.name for r in ranked[1:3])
            await emit(
                Progress(
                    Phase.SEARCHING, f"catalogue: {best.entry.name} matches ({words})", source=best.entry.name
                )
            )
            found.extend(
                await self._collect(Source(SourceKind.CATALOGUE, best.entry.name), prompt, emit, budget)
            )
            return (
                f"catalogue entry {best.entry.name} ({best.entry.title}), which shares the prompt's words {words}"
                + (f" (also matched: {others})" if others else "")
            )
        if self._web is None:
            raise NotFound(
                f"no dataset matches the prompt {prompt[:200]!r}: no built-in catalogue entry shares its words "
                f"(the catalogue holds {', '.join(self._catalogue.names())}) and web search is off "
                "(set FIRECRAWL_API_KEY to search with Firecrawl). Pass a source with the request: "
                "sources=[{url: 'https://.../data.csv'}] for a file or a page with a table, "
                "{local_path: '/path/to/file_or_folder'} for files on the crawler's host, or "
                "{catalog_name: 'sklearn.wine'} for a catalogue entry (zx: --source URL_OR_PATH).",
                reason="NO_DATASET_FOUND",
            )
        query = f"{prompt} dataset csv"
        await emit(Progress(Phase.SEARCHING, f"searching the web with {self._web.name}: {query!r}"))
        hits = await self._web.search(query, self._settings.firecrawl_search_limit)
        terms = content_tokens(prompt)
        hits = sorted(hits, key=lambda h: -match(terms, f"{h.title} {h.description} {h.url}").score)
        tried: list[str] = []
        for hit in hits:
            await emit(Progress(Phase.SEARCHING, f"candidate {hit.url} ({hit.title})", source=hit.url))
            try:
                parsed = await self._collect(Source(SourceKind.URL, hit.url), prompt, emit, budget)
            except (ResourceExhausted, DeadlineExceeded):
                raise
            except DomainError as exc:
                tried.append(f"{hit.url}: {exc.message}")
                continue
            if parsed.tables:
                found.extend(parsed)
                return f"web search ({self._web.name}) for {query!r}, result {hit.url} ({hit.title})"
            tried += parsed.skipped or [f"{hit.url}: no table"]
        raise NotFound(
            f"web search ({self._web.name}) for {query!r} found no usable data"
            + (f": {_short(tried)}" if tried else " (no results)")
            + ". Pass a source with the request (a URL, a local path or a catalogue name).",
            reason="NO_DATASET_FOUND",
        )

    async def _collect(self, source: Source, prompt: str, emit: Emit, budget: _ByteBudget) -> Parsed:
        if source.kind == SourceKind.CATALOGUE:
            entry = self._catalogue.get(source.value)
            await emit(
                Progress(
                    Phase.FETCHING,
                    f"loading {entry.name} from {entry.package}",
                    budget.used,
                    source=entry.name,
                )
            )
            table = await asyncio.to_thread(self._catalogue.load, entry)
            if table.resource is not None:
                table.resource.source = entry.name
                budget.charge(len(table.resource.data), entry.name)
            await emit(
                Progress(
                    Phase.PARSING,
                    f"{entry.name}: {table.n_rows} rows",
                    budget.used,
                    table.n_rows,
                    source=entry.name,
                )
            )
            return Parsed(tables=[table])
        if source.kind in (SourceKind.LOCAL_PATH, SourceKind.UPLOAD):
            read = self._upload_resources if source.kind == SourceKind.UPLOAD else self._local_resources
            out = Parsed()
            for resource in await asyncio.to_thread(read, source, budget):
                await emit(
                    Progress(
                        Phase.FETCHING,
                        f"read {resource.uri} ({human_bytes(len(resource.data))})",
                        budget.used,
                        source=source.value,
                    )
                )
                out.extend(await self._parse(resource, emit, budget))
            return out
        return await self._crawl_url(source, prompt, emit, budget)

    async def _parse(self, resource: Resource, emit: Emit, budget: _ByteBudget) -> Parsed:
        parsed: Parsed = await self._pool.run(
            parse_worker.parse,
            resource,
            self._limits,
            self._grid,
            str(_WORK_FOLDER.get()),
            what=resource.name,
        )
        rows = sum(t.n_rows for t in parsed.tables)
        what = f"{len(parsed.tables)} table(s), {rows} rows" if parsed.tables else "no usable table"
        await emit(
            Progress(Phase.PARSING, f"{resource.uri}: {what}", budget.used, rows, source=resource.source)
        )
        return parsed

    async def _get(self, url: str, source: Source, budget: _ByteBudget, *, data_file: bool) -> Resource:
        cap = min(self._settings.max_source_bytes, max(1, budget.remaining))
        if self._web is not None and not data_file:
            page = await self._web.scrape(url)
            resource = Resource(
                uri=page.url or url,
                name=urlsplit(page.url or url).path.rsplit("/", 1)[-1] or "index.html",
                data=page.html.encode("utf-8"),
                content_type="text/html",
                charset="utf-8",
                fetched_at=datetime.now(UTC),
            )
            resource.sha256 = hashlib.sha256(resource.data).hexdigest()
        else:
            # A GitHub file page is HTML around the file; its bytes are on raw.githubusercontent.com.
            resource = await self._fetcher.fetch(raw_file_url(url), max_bytes=cap)
        resource.source = source.value
        budget.charge(len(resource.data), url)
        return resource

    async def _crawl_url(self, source: Source, prompt: str, emit: Emit, budget: _ByteBudget) -> Parsed:
        seed_url = source.value
        out = Parsed()
        queue: list[tuple[str, int]] = [(seed_url, 0)]
        seen: set[str] = set()
        pages = 0
        terms = content_tokens(prompt)
        while queue and pages < self._settings.max_pages:
            url, depth = queue.pop(0)
            if url in seen:
                continue
            seen.add(url)
            pages += 1
            data_file = urlsplit(url).path.lower().endswith(DATA_EXTENSIONS)
            await emit(Progress(Phase.FETCHING, f"fetching {url}", budget.used, source=seed_url))
            try:
                resource = await self._get(url, source, budget, data_file=data_file)
            except (ResourceExhausted, DeadlineExceeded):
                raise
            except DomainError as exc:
                if depth == 0:
                    raise
                out.errors.append(exc)
                out.skipped.append(f"{url}: {exc.message}")
                continue
            await emit(
                Progress(
                    Phase.FETCHING,
                    f"fetched {url} ({human_bytes(len(resource.data))})",
                    budget.used,
                    source=seed_url,
                )
            )
            parsed = await self._parse(resource, emit, budget)
            links, parsed.links = parsed.links, []
            out.extend(parsed)
            if parsed.tables or depth >= self._settings.max_link_depth:
                continue
            data_links = [link for link in links if _is_data_link(link, seed_url) and link not in seen]
            data_links.sort(key=lambda link: -match(terms, link.replace("/", " ").replace("_", " ")).score)
            if data_links:
                await emit(
                    Progress(
                        Phase.FETCHING,
                        f"{url} has no usable table; following {len(data_links)} links to data files",
                        budget.used,
                        source=seed_url,
                    )
                )
                queue += [(link, depth + 1) for link in data_links]
            elif self._web is not None and depth == 0:
                await emit(
                    Progress(
                        Phase.FETCHING, f"crawling {url} with {self._web.name}", budget.used, source=seed_url
                    )
                )
                for page in await self._web.crawl(url, self._settings.firecrawl_crawl_limit):
                    if page.url in seen:
                        continue
                    seen.add(page.url)
                    data = page.html.encode("utf-8")
                    budget.charge(len(data), page.url)
                    resource = Resource(
                        uri=page.url, name=page.url.rsplit("/", 1)[-1] or "index.html", data=data,
                        content_type="text/html", charset="utf-8", fetched_at=datetime.now(UTC),
                        sha256=hashlib.sha256(data).hexdigest(), source=source.value,
                    )  # fmt: skip
                    crawled = await self._parse(resource, emit, budget)
                    crawled.links = []
                    out.extend(crawled)
        if queue and pages >= self._settings.max_pages:
            out.skipped.append(f"{seed_url}: stopped after {pages} pages (ZX_CRAWLER_MAX_PAGES)")
        return out

    def _upload_resources(self, source: Source, budget: _ByteBudget) -> list[Resource]:
        """The file of an upload the gateway sent (PutSourceFile), named as the user knows it."""
        if self._uploads is None:
            raise FailedPrecondition("this crawler keeps no uploads", reason="UPLOADS_DISABLED")
        path = self._uploads.resolve(source.value)
        size = path.stat().st_size
        cap = min(self._settings.max_source_bytes, budget.remaining or 1)
        if size > cap:
            raise ResourceExhausted(
                f"upload {source.value} is {human_bytes(size)}; the per-source cap is {human_bytes(cap)}",
                reason="SOURCE_TOO_LARGE",
            )
        data = path.read_bytes()
        label = upload_label(source.value, path.name)
        budget.charge(len(data), label)
        return [
            Resource(
                uri=label,
                name=path.name,
                data=data,
                fetched_at=datetime.now(UTC),
                sha256=hashlib.sha256(data).hexdigest(),
                source=label,
            )
        ]

    def _local_resources(self, source: Source, budget: _ByteBudget) -> list[Resource]:
        if not self._settings.local_roots:
            raise PermissionDenied(
                "local paths are disabled on this crawler; set ZX_CRAWLER_LOCAL_ROOTS (a JSON list of folders) "
                "to allow reading files under those folders",
                reason="LOCAL_PATHS_DISABLED",
            )
        # The roots are checked on the written path before the file system is touched (L1, S1).
        resolved, roots = resolve_local_path(source.value, self._settings.local_roots)

        def allowed(p: Path) -> bool:
            return is_allowed(p, roots)

        if resolved.is_dir():
            files = sorted(
                p for p in resolved.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(resolved).parts)
            )  # fmt: skip
            if len(files) > self._settings.max_files:
                raise ResourceExhausted(
                    f"{source.value} holds {len(files)} files; at most {self._settings.max_files} are read "
                    "(ZX_CRAWLER_MAX_FILES)",
                    reason="TOO_MANY_FILES",
                )
        else:
            files = [resolved]
        resources = []
        for f in files:
            real = f.resolve()
            if not allowed(real):
                continue  # a symlink out of the allowed folders
            if is_documentation(f.name) and len(files) > 1:
                continue
            size = real.stat().st_size
            cap = min(self._settings.max_source_bytes, budget.remaining or 1)
            if size > cap:
                raise ResourceExhausted(
                    f"{f} is {human_bytes(size)}; the per-source cap is {human_bytes(cap)} "
                    "(ZX_CRAWLER_MAX_SOURCE_BYTES, or the request's max_bytes)",
                    reason="SOURCE_TOO_LARGE",
                )
            data = real.read_bytes()
            budget.charge(len(data), str(f))
            resources.append(
                Resource(
                    uri=f.as_uri(),
                    name=str(f.relative_to(resolved)) if resolved.is_dir() else f.name,
                    data=data,
                    fetched_at=datetime.now(UTC),
                    sha256=hashlib.sha256(data).hexdigest(),
                    source=source.value,
                )
            )
        if not resources:
            raise NotFound(f"{source.value} holds no readable data files", reason="NO_USABLE_TABLE")
        return resources

    # -- choosing ---------------------------------------------------------------------------------

    def _choose_tables(self, found: Parsed, prompt: str) -> _Choice:
        if not found.tables:
            if len(found.errors) == 1 and len(found.skipped) <= 1:
                raise found.errors[0]
            reasons = found.skipped or [e.message for e in found.errors] or ["nothing readable"]
            raise NotFound(
                f"no usable table: {_short(reasons, 10)}",
                reason="NO_USABLE_TABLE",
                metadata={"sources_skipped": str(len(reasons))},
            )
        groups: dict[tuple[str, ...], list[RawTable]] = {}
        for table in found.tables:
            key = tuple(sorted(c.strip().lower() for c in table.columns))
            groups.setdefault(key, []).append(table)
        terms = content_tokens(prompt)

        def score(tables: list[RawTable]) -> tuple[float, ...]:
            first = tables[0]
            rows = sum(t.n_rows for t in tables)
            words = match(terms, " ".join(first.columns) + " " + " ".join(t.context for t in tables)).score
            return (float(len(first.columns) >= 2), words, math.log10(rows + 1) * min(len(first.columns), 20))

        ranked = sorted(groups.values(), key=score, reverse=True)
        best = ranked[0]
        others = [
            f"{g[0].origin}{f' (+{len(g) - 1} more)' if len(g) > 1 else ''}: {sum(t.n_rows for t in g)} rows, "
            f"columns {', '.join(g[0].columns[:6])}{'...' if len(g[0].columns) > 6 else ''}"
            for g in ranked[1:]
        ]
        rows = sum(t.n_rows for t in best)
        where = best[0].origin if len(best) == 1 else f"{len(best)} files with the same columns"
        why = f"{where} ({rows} rows, {len(best[0].columns)} columns, {best[0].format})"
        if len(ranked) > 1:
            why += f", chosen over {len(ranked) - 1} other table(s) for its fit to the prompt and its size"
        return _Choice(best, why, others)

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _groups(table: cleaning.Table, target: str) -> list[int]:
        """Rows with identical inputs share a group id."""
        inputs = [c.values for c in table.columns if c.name != target]
        ids: dict[Any, int] = {}
        out = []
        for row in zip(*inputs, strict=True):
            key = tuple(tuple(v) if isinstance(v, list) else v for v in row)
            out.append(ids.setdefault(key, len(ids)))
        return out

    def _cap_rows(
        self, table: cleaning.Table, picked: task.TaskChoice, max_rows: int | None, seed: int
    ) -> cleaning.Table:
        limit = max_rows or self._settings.max_rows
        if table.n_rows <= limit:
            return table
        if not max_rows:
            raise ResourceExhausted(
                f"{table.n_rows} rows exceed the crawler's limit of {limit} (ZX_CRAWLER_MAX_ROWS); pass "
                "options.max_rows to sample fewer",
                reason="TOO_MANY_ROWS",
            )
        if picked.task.value == "time_series_forecasting":
            keep = list(range(table.n_rows - limit, table.n_rows))
            how = "the most recent"
        else:
            rng = np.random.default_rng(seed)
            keep = sorted(rng.choice(table.n_rows, size=limit, replace=False).tolist())
            how = f"a random sample (seed {seed}) of"
        capped = table.take(keep)
        capped.notes.append(f"kept {how} {limit} of {table.n_rows} rows (options.max_rows)")
        return capped

    @staticmethod
    def _provenance(tables: list[RawTable]) -> list[ProvenanceRecord]:
        records: list[ProvenanceRecord] = []
        seen: set[str] = set()
        for table in tables:
            resource = table.resource
            if resource is None or resource.uri in seen:
                continue
            seen.add(resource.uri)
            records.append(
                ProvenanceRecord(
                    source=resource.source or resource.uri,
                    uri=resource.uri,
                    fetched_at=resource.fetched_at or datetime.now(UTC),
                    sha256=resource.sha256,
                    bytes=resource.n_bytes,
                    licence=resource.licence,
                    content_type=resource.content_type or "",
                    title=table.title or resource.name,
                    description=f"{table.origin}: {table.format}, {table.n_rows} rows, {len(table.columns)} columns",
                )
            )
        return records

    @staticmethod
    def _name(tables: list[RawTable]) -> str:
        first = tables[0]
        if first.format == "catalogue" and first.resource is not None:
            return first.resource.name
        if first.format == "html-table" and first.title:
            return first.title.split(" - ")[0][:120]
        names = [t.resource.name if t.resource else t.origin for t in tables]
        base = names[0].rsplit("/", 1)[-1]
        return base + (f" + {len(names) - 1} more" if len(names) > 1 else "")
