"""The dataset's preview: the first rows of the training split as stored (long text cut), and the
crawler refusing ``upload_id`` sources, which only the gateway can resolve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from crawler_support import Crawler, crawler_settings, start_crawler, stop_crawler
from google.protobuf import json_format
from zehanx_crawler.convert import PREVIEW_ROWS, PREVIEW_TEXT_CHARS

pytestmark = pytest.mark.timeout(180)


async def test_preview_rows_are_the_first_training_rows_as_stored(
    crawler: Crawler, shared_data: Path
) -> None:
    messages = await crawler.build(
        "predict the penguin species", str(shared_data / "palmer_penguins" / "penguins.csv")
    )
    dataset = messages[-1].dataset
    assert len(dataset.preview_rows) == PREVIEW_ROWS
    text = (await crawler.read(dataset.ref.train_uri, dataset.ref.train_sha256)).decode("utf-8")
    lines = text.splitlines()[:PREVIEW_ROWS]
    stored = [json.loads(line) for line in lines]
    shown = [json_format.MessageToDict(row) for row in dataset.preview_rows]
    # Struct numbers are doubles: compare as JSON numbers do.
    assert shown == json.loads(json.dumps(stored))
    assert dataset.target_column in shown[0]


async def test_long_text_is_cut_in_the_preview(tmp_path: Path, shared_data: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    rows = ["text,label"]
    for n in range(60):
        words = ("great lovely fine " if n % 2 else "awful broken poor ") * (40 + n)
        rows.append(f'"{words.strip()} {n}",{"pos" if n % 2 else "neg"}')
    (root / "reviews.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    crawler = await start_crawler(crawler_settings(tmp_path, shared_data, local_roots=[root]))
    try:
        messages = await crawler.build("review sentiment", str(root / "reviews.csv"))
    finally:
        await stop_crawler(crawler)
    shown = [json_format.MessageToDict(row) for row in messages[-1].dataset.preview_rows]
    assert len(shown) == PREVIEW_ROWS
    texts = [row["text"] for row in shown]
    assert all(len(t) == PREVIEW_TEXT_CHARS for t in texts)  # every text here is longer: all were cut
