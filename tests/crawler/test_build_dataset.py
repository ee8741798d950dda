"""BuildDataset through the real gRPC stream, on the real files and pages of ../shared/data.

Row counts are those of each folder's SOURCE.txt; every test reads the stored split files back as the
trainer does (``ReadDatasetFile``, each checked against its sha256) and checks them against the source,
not against the crawler's own report.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import statistics
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import grpc
import pytest
from crawler_support import Crawler, HttpSite, build_request
from zehanx.common.v1 import dataset_pb2, task_family_pb2
from zehanx.crawler.v1 import crawler_service_pb2 as pb
from zehanx_runtime.status import error_info_of

pytestmark = pytest.mark.timeout(180)


async def _rows(crawler: Crawler, uri: str, sha256: str) -> list[dict[str, Any]]:
    data = await crawler.read(uri, sha256)
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def _dataset(messages: list[pb.BuildDatasetResponse]) -> Any:
    assert messages, "the stream was empty"
    assert [m.sequence for m in messages] == list(range(1, len(messages) + 1))
    assert all(m.HasField("progress") for m in messages[:-1])
    assert messages[-1].HasField("dataset")
    return messages[-1].dataset


async def _splits(crawler: Crawler, dataset: Any) -> dict[str, list[dict[str, Any]]]:
    """The three splits read back through ReadDatasetFile, each checked against its sha256."""
    ref = dataset.ref
    out = {
        "train": await _rows(crawler, ref.train_uri, ref.train_sha256),
        "validation": await _rows(crawler, ref.validation_uri, ref.validation_sha256),
        "test": await _rows(crawler, ref.test_uri, ref.test_sha256),
    }
    assert [len(out[s]) for s in out] == [
        dataset.train_row_count,
        dataset.validation_row_count,
        dataset.test_row_count,
    ]
    return out


def _all(splits: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return splits["train"] + splits["validation"] + splits["test"]


async def _error(crawler: Crawler, request: pb.BuildDatasetRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in crawler.stream(request):
            pass
    return info.value


# -- the parsing traps of ../shared/data/README.md --------------------------------------------------


async def test_imdb_sentences_over_http_keep_all_1000_rows(
    crawler: Crawler, http_site: HttpSite, shared_data: Path
) -> None:
    url = http_site.url("/data/sentiment_labelled_sentences/imdb_labelled.txt")
    dataset = _dataset(await crawler.build("sentiment analysis of movie reviews", url))
    rows = _all(await _splits(crawler, dataset))
    assert len(rows) == 1000 == dataset.profile.row_count
    assert dataset.task_family == task_family_pb2.TASK_FAMILY_TEXT_CLASSIFICATION
    assert dataset.target_column == "label"
    # Every line of the file, split on its last tab, is a row: quotes stay part of the text.
    lines = (shared_data / "sentiment_labelled_sentences/imdb_labelled.txt").read_bytes().decode().split("\n")
    # (Runs of white space, U+0085 included, read as one space.)
    expected = sorted(
        (" ".join(line.rsplit("\t", 1)[0].split()), int(line.rsplit("\t", 1)[1]))
        for line in lines
        if line.strip()
    )
    assert sorted((" ".join(r["text"].split()), r["label"]) for r in rows) == expected
    assert any('"' in r["text"] for r in rows)
    assert any("748" in w for w in dataset.warnings)


async def test_sms_spam_over_http_keeps_all_5574_messages(crawler: Crawler, http_site: HttpSite) -> None:
    dataset = _dataset(
        await crawler.build("spam detection for SMS", http_site.url("/data/sms_spam_collection/"))
    )
    splits = await _splits(crawler, dataset)
    rows = _all(splits)
    assert len(rows) == 5574
    assert {c.label: c.count for c in dataset.profile.classes} == {"ham": 4827, "spam": 747}
    # The folder listing was followed to the data file; the readme and SOURCE.txt are not data.
    assert [p.source for p in dataset.provenance] == [http_site.url("/data/sms_spam_collection/")]
    assert dataset.provenance[0].description.startswith(
        http_site.url("/data/sms_spam_collection/SMSSpamCollection")
    )


async def test_rt_polarity_latin1_with_0x85_is_not_split_into_extra_rows(
    crawler: Crawler, http_site: HttpSite, shared_data: Path
) -> None:
    url = http_site.url("/data/mr_movie_review_polarity/rt-polarity.all")
    dataset = _dataset(await crawler.build("movie review polarity classifier", url))
    rows = _all(await _splits(crawler, dataset))
    assert len(rows) == 10662
    assert {c.label: c.count for c in dataset.profile.classes} == {"0": 5331, "1": 5331}
    raw = (shared_data / "mr_movie_review_polarity/rt-polarity.all").read_bytes()
    with_0x85 = sum(1 for line in raw.split(b"\n") if b"\x85" in line)
    assert with_0x85 > 0
    # 0x85 is an ellipsis in windows-1252, inside its line, never a line break.
    assert sum(1 for r in rows if "\u2026" in r["text"]) == with_0x85
    assert not any("\x85" in r["text"] for r in rows)
    assert any("windows-1252" in w for w in dataset.warnings)


async def test_sentences_folder_stacks_three_files_to_3000_rows(crawler: Crawler, shared_data: Path) -> None:
    dataset = _dataset(
        await crawler.build("sentiment analysis", str(shared_data / "sentiment_labelled_sentences"))
    )
    rows = _all(await _splits(crawler, dataset))
    assert len(rows) == 3000
    assert {c.label: c.count for c in dataset.profile.classes} == {"0": 1500, "1": 1500}
    assert sorted(Path(p.source).name for p in dataset.provenance) == ["sentiment_labelled_sentences"] * 3
    assert sorted(Path(unquote(p.description.split(":", 2)[1])).name for p in dataset.provenance) == [
        "amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"]  # fmt: skip


async def test_zip_archive_of_the_sentences_gives_3000_rows(crawler: Crawler, http_site: HttpSite) -> None:
    dataset = _dataset(await crawler.build("sentiment analysis", http_site.url("/archives/sentences.zip")))
    assert len(_all(await _splits(crawler, dataset))) == 3000


# -- HTML pages -------------------------------------------------------------------------------------


async def test_fdic_failed_bank_table_becomes_a_dataset(crawler: Crawler, http_site: HttpSite) -> None:
    url = http_site.url("/data/html/fdic_failed_bank_list/banklist.html")
    dataset = _dataset(await crawler.build("classify the state of a failed bank", url))
    rows = _all(await _splits(crawler, dataset))
    assert len(rows) == 506
    assert set(rows[0]) == {
        "Bank Name",
        "City",
        "ST",
        "CERT",
        "Acquiring Institution",
        "Closing Date",
        "Updated Date",
    }
    assert dataset.target_column == "ST"
    assert dataset.task_family == task_family_pb2.TASK_FAMILY_TABULAR_CLASSIFICATION
    assert all(isinstance(r["CERT"], int) for r in rows)
    # "May 31, 2013" style dates become ISO 8601.
    assert all(len(r["Closing Date"]) == 10 and r["Closing Date"][4] == "-" for r in rows)
    assert dataset.provenance[0].title == "FDIC: Failed Bank List"


async def test_wikipedia_states_table_is_cleaned(crawler: Crawler, http_site: HttpSite) -> None:
    url = http_site.url("/data/html/wikipedia_us_states_by_area/wikipedia_states.html")
    dataset = _dataset(
        await crawler.build("predict the water area of a state", url, target_column_hint="Water / % water")
    )
    rows = _all(await _splits(crawler, dataset))
    by_name = {r["State/territory"]: r for r in rows}
    # Two header rows joined; numbers as numbers, thousands separators and hidden sort keys gone.
    alaska = by_name["Alaska"]
    assert alaska["Total area / sq mi"] == 665384.04
    assert alaska["Total area / Rank"] == 1
    assert alaska["Water / % water"] == pytest.approx(14.24)
    assert by_name["Texas"]["Total area / Rank"] == 2
    for row in rows:
        for key, value in row.items():
            assert not (isinstance(value, str) and ("!" in value or "♠" in value)), (key, value)
            if key != "State/territory":
                assert value is None or isinstance(value, int | float), (key, value)
    # Summary rows (totals) are dropped and said so; 50 states, DC and the territories remain.
    assert "Contiguous United States" not in by_name
    assert len(rows) >= 51
    assert any("summary rows" in w for w in dataset.warnings)
    assert dataset.task_family == task_family_pb2.TASK_FAMILY_TABULAR_REGRESSION


async def test_mozilla_article_is_refused_with_no_usable_table(crawler: Crawler, http_site: HttpSite) -> None:
    error = await _error(
        crawler,
        _request("train a model on mozilla", http_site.url("/data/html/wikipedia_mozilla/source.html")),
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no usable table" in error.details()
    assert "infobox" in error.details()
    info = error_info_of(error)
    assert info is not None and info.reason == "NO_USABLE_TABLE"


async def test_seed_page_without_table_follows_links_to_data_files(
    crawler: Crawler, http_site: HttpSite
) -> None:
    dataset = _dataset(await crawler.build("spam filter", http_site.url("/links/index.html")))
    assert dataset.profile.row_count == 5574
    assert http_site.handler.hits.get("/data/sms_spam_collection/readme", 0) == 0  # documentation not fetched


# -- catalogue --------------------------------------------------------------------------------------


async def test_prompt_without_sources_finds_the_wine_catalogue_entry(crawler: Crawler) -> None:
    messages = await crawler.build("classify wine cultivars")
    assert messages[0].progress.phase == pb.DATASET_BUILD_PHASE_SEARCHING
    dataset = _dataset(messages)
    assert dataset.profile.row_count == 178
    assert dataset.target_column == "cultivar"
    assert {c.label: c.count for c in dataset.profile.classes} == {
        "class_1": 71,
        "class_0": 59,
        "class_2": 48,
    }
    assert "sklearn.wine" in dataset.explanation
    assert dataset.provenance[0].source == "sklearn.wine"
    assert "CC BY 4.0" in dataset.provenance[0].license


async def test_prompt_matching_nothing_says_how_to_pass_a_source(crawler: Crawler) -> None:
    error = await _error(crawler, pb.BuildDatasetRequest(prompt="predict tomorrow's bitcoin price"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "Pass a source" in error.details() and "url" in error.details()


async def test_list_catalog_pages_in_name_order(crawler: Crawler) -> None:
    metadata = [("x-zx-service-token", "crawler-test-token")]
    first = await crawler.stub.ListCatalog(pb.ListCatalogRequest(page_size=2), metadata=metadata)
    names = [e.name for e in first.entries]
    token = first.next_page_token
    while token:
        page = await crawler.stub.ListCatalog(
            pb.ListCatalogRequest(page_size=2, page_token=token), metadata=metadata
        )
        names += [e.name for e in page.entries]
        token = page.next_page_token
    assert names == sorted(names) and "sklearn.wine" in names and "sklearn.digits" in names
    images = await crawler.stub.ListCatalog(
        pb.ListCatalogRequest(task_family=task_family_pb2.TASK_FAMILY_IMAGE_CLASSIFICATION), metadata=metadata
    )
    assert [e.name for e in images.entries] == ["sklearn.digits"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await crawler.stub.ListCatalog(pb.ListCatalogRequest(page_token="zz"), metadata=metadata)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- splits -----------------------------------------------------------------------------------------


async def test_splits_are_stratified_disjoint_and_deterministic(crawler: Crawler, shared_data: Path) -> None:
    path = str(shared_data / "sms_spam_collection/SMSSpamCollection")
    first = _dataset(await crawler.build("spam detection", path, seed=7))
    again = _dataset(await crawler.build("spam detection", path, seed=7))
    other = _dataset(await crawler.build("spam detection", path, seed=8))
    assert first.split_seed == 7 and other.split_seed == 8
    assert first.ref.train_sha256 == again.ref.train_sha256 and first.ref.test_sha256 == again.ref.test_sha256
    assert first.id == again.id and first.id != other.id
    assert first.ref.test_sha256 != other.ref.test_sha256

    splits = await _splits(crawler, first)
    train_texts = {r["text"] for r in splits["train"]}
    assert not any(r["text"] in train_texts for r in splits["test"])  # no test message is seen in training
    assert not any(r["text"] in train_texts for r in splits["validation"])
    total = {"ham": 4827, "spam": 747}
    for name, fraction in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        counts = {label: sum(1 for r in splits[name] if r["label"] == label) for label in total}
        for label, n in total.items():
            # Duplicated messages move as a group, so the share is close, not exact.
            assert abs(counts[label] - n * fraction) <= max(8, 0.03 * n), (name, label, counts)
    assert first.split_fractions.train_fraction == pytest.approx(0.8)


async def test_custom_fractions_and_temporal_split_of_a_series(crawler: Crawler, shared_data: Path) -> None:
    dataset = _dataset(
        await crawler.build(
            "forecast monthly airline passengers",
            str(shared_data / "airline_passengers/Airline.csv"),
            split_fractions=(0.6, 0.2, 0.2),
        )
    )
    assert dataset.task_family == task_family_pb2.TASK_FAMILY_TIME_SERIES_FORECASTING
    splits = await _splits(crawler, dataset)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [86, 29, 29]
    schema = json.loads(dataset.ref.schema_json)
    time_column = schema["time_column"]
    dates = [r[time_column] for r in _all(splits)]
    assert dates == sorted(dates) and len(set(dates)) == 144  # oldest for training, newest for testing


# -- profile, provenance, files ---------------------------------------------------------------------


async def test_profile_numbers_match_the_source(
    crawler: Crawler, http_site: HttpSite, shared_data: Path
) -> None:
    url = http_site.url("/data/palmer_penguins/penguins.csv")
    dataset = _dataset(await crawler.build("classify penguin species", url))
    source = list(csv.DictReader(io.StringIO((shared_data / "palmer_penguins/penguins.csv").read_text())))
    assert dataset.profile.row_count == len(source) == 344
    columns = {c.name: c for c in dataset.profile.columns}
    bill = [float(r["bill_length_mm"]) for r in source if r["bill_length_mm"] != "NA"]
    stats = columns["bill_length_mm"]
    assert stats.type == dataset_pb2.COLUMN_TYPE_FLOAT
    assert stats.missing_count == len(source) - len(bill) == 2
    assert stats.numeric.mean == pytest.approx(statistics.fmean(bill), rel=1e-5)
    assert stats.numeric.stddev == pytest.approx(statistics.pstdev(bill), rel=1e-5)
    assert (stats.numeric.min, stats.numeric.max) == (min(bill), max(bill))
    assert columns["sex"].missing_count == sum(1 for r in source if r["sex"] == "NA")
    assert columns["island"].distinct_count == 3
    species = {s: sum(1 for r in source if r["species"] == s) for s in {r["species"] for r in source}}
    assert [(c.label, c.count) for c in dataset.profile.classes] == sorted(
        species.items(), key=lambda kv: -kv[1]
    )
    assert dataset.profile.imbalance_ratio == pytest.approx(
        max(species.values()) / min(species.values()), rel=1e-5
    )
    assert sum(c.fraction for c in dataset.profile.classes) == pytest.approx(1.0)


async def test_text_lengths_and_provenance_of_a_fetched_file(
    crawler: Crawler, http_site: HttpSite, shared_data: Path
) -> None:
    url = http_site.url("/data/sentiment_labelled_sentences/yelp_labelled.txt")
    dataset = _dataset(await crawler.build("restaurant review sentiment", url))
    raw = (shared_data / "sentiment_labelled_sentences/yelp_labelled.txt").read_bytes()
    texts = [line.rsplit("\t", 1)[0] for line in raw.decode().split("\n") if line.strip()]
    lengths = sorted(len(t.strip()) for t in texts)
    text = {c.name: c for c in dataset.profile.columns}["text"]
    assert text.type == dataset_pb2.COLUMN_TYPE_TEXT
    assert (text.text_length.min, text.text_length.max) == (lengths[0], lengths[-1])
    assert text.text_length.mean == pytest.approx(statistics.fmean(lengths), rel=1e-4)
    assert text.text_length.p50 == pytest.approx(statistics.median(lengths))
    (prov,) = dataset.provenance
    assert prov.source == url
    assert prov.sha256 == hashlib.sha256(raw).hexdigest()
    assert prov.size_bytes == len(raw)
    assert prov.fetch_time.seconds > 0


async def test_dataset_files_follow_the_program_contract(crawler: Crawler, shared_data: Path) -> None:
    dataset = _dataset(
        await crawler.build("classify penguin species", str(shared_data / "palmer_penguins/penguins.csv"))
    )
    folder = crawler.app.store.locate(dataset.ref.train_uri)[0].parent
    assert folder.parent == crawler.settings.datasets_dir.resolve()
    assert sorted(p.name for p in folder.iterdir()) == [
        "profile.json",
        "provenance.json",
        "schema.json",
        "test.jsonl",
        "train.jsonl",
        "validation.jsonl",
    ]
    assert (folder / "schema.json").read_text(encoding="utf-8") == dataset.ref.schema_json
    # Other services get the files by these URIs through ReadDatasetFile, never by a path.
    digest = folder.name
    assert dataset.ref.train_uri == f"zx-crawler:/datasets/{digest}/train.jsonl"
    assert dataset.ref.test_uri == f"zx-crawler:/datasets/{digest}/test.jsonl"
    assert await crawler.read(dataset.ref.test_uri) == (folder / "test.jsonl").read_bytes()
    assert dataset.ref.format == dataset_pb2.DATASET_FILE_FORMAT_JSONL
    schema = json.loads(dataset.ref.schema_json)
    assert schema["task"] == "tabular_classification" and schema["target"] == "species"
    assert sorted(schema["classes"]) == ["Adelie", "Chinstrap", "Gentoo"]
    assert schema["split"]["seed"] == dataset.split_seed == 42
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["dataset_id"] == dataset.id == dataset.ref.dataset_id
    assert (
        provenance["sources"][0]["sha256"]
        == hashlib.sha256((shared_data / "palmer_penguins/penguins.csv").read_bytes()).hexdigest()
    )
    assert not list(folder.parent.glob(".tmp-*"))


async def test_digits_images_are_packed_for_image_classification(crawler: Crawler) -> None:
    dataset = _dataset(await crawler.build("recognise handwritten digits", "sklearn.digits"))
    assert dataset.task_family == task_family_pb2.TASK_FAMILY_IMAGE_CLASSIFICATION
    rows = (await _splits(crawler, dataset))["test"]
    assert set(rows[0]) == {"image", "digit"} and len(rows[0]["image"]) == 64
    assert json.loads(dataset.ref.schema_json)["image"]["shape"] == [8, 8]
    # The pixel range is profiled (scikit-learn's digits are 0..16, not 0..255), so a program scales
    # them right; mean and spread recomputed here from every pixel of every row.
    (image,) = [c for c in dataset.profile.columns if c.name == "image"]
    pixels = [
        v for split in (await _splits(crawler, dataset)).values() for row in split for v in row["image"]
    ]
    assert (image.numeric.min, image.numeric.max) == (0, 16)
    assert image.numeric.mean == pytest.approx(sum(pixels) / len(pixels), rel=1e-5)


def _request(prompt: str, *sources: str) -> pb.BuildDatasetRequest:

    return build_request(prompt, *sources)


async def test_max_rows_samples_with_the_seed_and_says_so(crawler: Crawler, shared_data: Path) -> None:
    path = str(shared_data / "mr_movie_review_polarity/rt-polarity.all")
    first = _dataset(await crawler.build("movie review polarity", path, max_rows=500, seed=3))
    again = _dataset(await crawler.build("movie review polarity", path, max_rows=500, seed=3))
    assert first.profile.row_count == 500 == len(_all(await _splits(crawler, first)))
    assert first.ref.train_sha256 == again.ref.train_sha256
    assert any("random sample (seed 3) of 500 of 10662" in w for w in first.warnings), first.warnings


async def test_read_dataset_file_refuses_what_the_crawler_does_not_own(crawler: Crawler) -> None:
    """Only this crawler's split files, by their URIs: no path, no other file of the folder, no guessing."""
    for uri in (
        "file:///etc/passwd",
        "zx-crawler:/datasets/" + "a" * 64 + "/schema.json",
        "zx-crawler:/datasets/../../etc/train.jsonl",
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await crawler.read(uri)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, uri
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await crawler.read("zx-crawler:/datasets/" + "b" * 64 + "/train.jsonl")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "has no dataset" in (missing.value.details() or "")
