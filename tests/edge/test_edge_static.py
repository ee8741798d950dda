"""How the edge serves the dashboard's files: gzip for browsers that take it, the same bytes otherwise,
and a strong ETag so a reload revalidates instead of downloading the bundle again."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import httpx
from zehanx_gateway.edge.server import WebApp


def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    root.mkdir()
    (root / "index.html").write_text('<!doctype html><script src="/app.js"></script>')
    (root / "app.js").write_text("console.log('zehanx');\n" * 2000)
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return root


async def test_text_files_go_gzip_to_browsers_that_take_it_and_plain_to_others(tmp_path: Path) -> None:
    root = dist(tmp_path)
    app = WebApp(root)
    raw = (root / "app.js").read_bytes()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        packed = await client.get("/app.js", headers={"accept-encoding": "gzip, deflate, br"})
        assert packed.status_code == 200
        assert packed.headers["content-encoding"] == "gzip"
        assert packed.content == raw, "httpx decoded the gzip body back to the file"
        assert int(packed.headers["content-length"]) < len(raw) // 10
        assert packed.headers["vary"] == "accept-encoding"
        assert "content-security-policy" in packed.headers

        plain = await client.get("/app.js", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == raw
        assert int(plain.headers["content-length"]) == len(raw)

        image = await client.get("/logo.png", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in image.headers, "images are compressed already"
        assert image.content == (root / "logo.png").read_bytes()

        page = await client.get(
            "/jobs/4b6b1c3e-0000-4000-8000-000000000000", headers={"accept-encoding": "gzip"}
        )
        assert page.headers["content-encoding"] == "gzip" and page.text.startswith("<!doctype html>")
    assert gzip.decompress(gzip.compress(raw)) == raw


async def test_an_unchanged_file_revalidates_with_304_and_a_rebuilt_one_does_not(tmp_path: Path) -> None:
    root = dist(tmp_path)
    app = WebApp(root)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        first = await client.get("/app.js")
        etag = first.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"')
        again = await client.get("/app.js", headers={"if-none-match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag

        # A rebuild changes the bytes (and the mtime): the old ETag no longer matches.
        (root / "app.js").write_text("console.log('rebuilt');\n")
        os.utime(root / "app.js", ns=(1, 1))
        rebuilt = await client.get("/app.js", headers={"if-none-match": etag})
        assert rebuilt.status_code == 200 and rebuilt.text == "console.log('rebuilt');\n"
        assert rebuilt.headers["etag"] != etag
