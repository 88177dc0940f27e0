"""pinchpoint.data.fetch against a local HTTP server laid out as MLCommons' R2 bucket: a
``metadata/<name>.uri`` holding the dataset's base URL, ``metadata/<name>.md5`` in md5sum form,
the files under the base URL. Nothing is downloaded from outside."""
from __future__ import annotations

import hashlib
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pinchpoint.data import fetch as F
from pinchpoint.errors import DataError

FILES = {
    "c4-train.en_6_text_document.bin": 300_000,
    "c4-train.en_6_text_document.idx": 20_000,
    "val/c4-validation-91205-samples.en_text_document.bin": 200_000,
}


class Bucket:
    """What the server serves: path -> bytes; which paths answer 403; the requests it saw."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.forbidden: set[str] = set()
        self.needs_token: str = ""
        self.requests: list[tuple[str, str]] = []   # (path, Range header or "")
        self.lock = threading.Lock()


def _handler(bucket: Bucket):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            path = self.path.split("?")[0]
            rng = self.headers.get("Range", "")
            with bucket.lock:
                bucket.requests.append((path, rng))
            if path in bucket.forbidden or (bucket.needs_token and
                                             self.headers.get("cf-access-token") != bucket.needs_token):
                self.send_response(403)
                self.end_headers()
                return
            body = bucket.objects.get(path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            if m:
                start = int(m.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start:])

    return Handler


@pytest.fixture
def server():
    bucket = Bucket()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(bucket))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield bucket, url
    finally:
        httpd.shutdown()
        httpd.server_close()


def _publish(bucket: Bucket, url: str, name: str = "tiny-c4", corrupt: str = "") -> str:
    """A dataset in the R2 layout; ``corrupt`` names a file served with other bytes than its md5
    says. Returns the .uri URL."""
    lines = []
    for i, (rel, size) in enumerate(FILES.items()):
        body = (hashlib.sha256(f"{rel}{i}".encode()).digest() * (size // 32 + 1))[:size]
        lines.append(f"{hashlib.md5(body).hexdigest()}  ./{rel}")
        served = body[:-1] + bytes([body[-1] ^ 0xFF]) if rel == corrupt else body
        bucket.objects[f"/training/datasets/{name}/{rel}"] = served
    bucket.objects[f"/metadata/{name}.uri"] = f"{url}/training/datasets/{name}\n".encode()
    bucket.objects[f"/metadata/{name}.md5"] = ("\n".join(lines) + "\n").encode()
    return f"{url}/metadata/{name}.uri"


def _body(bucket, name, rel):
    return bucket.objects[f"/training/datasets/{name}/{rel}"]


def _finals(dest):
    return sorted(os.path.relpath(os.path.join(d, f), dest) for d, _, fs in os.walk(dest)
                  for f in fs)


def test_fetch_verifies_every_file_then_a_rerun_skips_them(server, tmp_path):
    bucket, url = server
    uri = _publish(bucket, url)
    dest = str(tmp_path / "c4")
    r = F.fetch(uri, dest, jobs=3, http=F.Http(headers={}))
    assert r.ok and len(r.by("fetched")) == 3 and r.bytes == sum(FILES.values())
    assert _finals(dest) == sorted(["tiny-c4.md5"] + [p.replace("/", os.sep) for p in FILES])
    for rel in FILES:
        with open(os.path.join(dest, rel), "rb") as f:
            assert f.read() == _body(bucket, "tiny-c4", rel)
    again = F.fetch(uri, dest, http=F.Http(headers={}))
    assert again.ok and len(again.by("skipped")) == 3 and again.bytes == 0
    assert "skipped 3 (present, md5 ok)" in again.text()


def test_a_corrupt_file_fails_naming_it_and_leaves_no_final_file(server, tmp_path):
    bucket, url = server
    bad = "c4-train.en_6_text_document.idx"
    uri = _publish(bucket, url, corrupt=bad)
    dest = str(tmp_path / "c4")
    r = F.fetch(uri, dest, jobs=2, http=F.Http(headers={}))
    assert not r.ok
    [failed] = r.by("failed")
    good = hashlib.md5(bytes(_body(bucket, "tiny-c4", bad)[:-1]) +
                       bytes([_body(bucket, "tiny-c4", bad)[-1] ^ 0xFF])).hexdigest()
    assert failed.rel == bad and isinstance(failed.error, F.ChecksumMismatch)
    assert failed.error.actual == hashlib.md5(_body(bucket, "tiny-c4", bad)).hexdigest()
    assert failed.error.expected == good
    assert bad in r.text() and failed.error.expected in r.text() and failed.error.actual in r.text()
    assert not os.path.exists(os.path.join(dest, bad))
    assert not os.path.exists(os.path.join(dest, bad + ".part"))
    gets = [p for p, _ in bucket.requests if p.endswith(bad)]
    assert len(gets) == 2                       # deleted, downloaded once more, then failed
    assert len(r.by("fetched")) == 2            # the others still land, verified


def test_a_partial_part_is_resumed_with_a_range_request(server, tmp_path):
    bucket, url = server
    uri = _publish(bucket, url)
    dest = tmp_path / "c4"
    rel = "c4-train.en_6_text_document.bin"
    body = _body(bucket, "tiny-c4", rel)
    dest.mkdir()
    (dest / (rel + ".part")).write_bytes(body[:len(body) // 2])
    r = F.fetch(uri, str(dest), jobs=1, http=F.Http(headers={}))
    assert r.ok
    assert (f"/training/datasets/tiny-c4/{rel}", f"bytes={len(body) // 2}-") in bucket.requests
    [res] = [f for f in r.files if f.rel == rel]
    assert res.resumed_from == len(body) // 2 and res.bytes == len(body) - len(body) // 2
    assert (dest / rel).read_bytes() == body and not (dest / (rel + ".part")).exists()
    assert f"resumed {rel} from byte {len(body) // 2:,}" in r.text()


def test_a_wrong_final_file_is_replaced_and_a_full_part_restarts(server, tmp_path):
    bucket, url = server
    uri = _publish(bucket, url)
    dest = tmp_path / "c4"
    (dest / "val").mkdir(parents=True)
    rel = "c4-train.en_6_text_document.idx"
    (dest / rel).write_bytes(b"x" * 10)                       # wrong bytes under the final name
    vrel = "val/c4-validation-91205-samples.en_text_document.bin"
    (dest / (vrel + ".part")).write_bytes(b"y" * 300_000)     # longer than the file: 416
    r = F.fetch(uri, str(dest), http=F.Http(headers={}))
    assert r.ok and len(r.by("fetched")) == 3
    assert (dest / rel).read_bytes() == _body(bucket, "tiny-c4", rel)
    assert (dest / vrel).read_bytes() == _body(bucket, "tiny-c4", vrel)


def test_403_says_a_member_token_is_needed_and_the_token_is_sent(server, tmp_path, monkeypatch):
    bucket, url = server
    uri = _publish(bucket, url)
    bucket.needs_token = "secret-jwt"
    with pytest.raises(F.TokenRequired, match="needs an MLCommons member token") as e:
        F.fetch(uri, str(tmp_path / "c4"), http=F.Http(headers={}))
    assert "cloudflared access login" in str(e.value) and "CF_ACCESS_TOKEN" in str(e.value)
    assert not (tmp_path / "c4").exists()
    monkeypatch.setenv("CF_ACCESS_TOKEN", "secret-jwt")
    r = F.fetch(uri, str(tmp_path / "c4"), http=F.Http())
    assert r.ok and len(r.by("fetched")) == 3


def test_a_file_answering_403_fails_with_the_token_message(server, tmp_path):
    bucket, url = server
    uri = _publish(bucket, url)
    bucket.forbidden.add("/training/datasets/tiny-c4/c4-train.en_6_text_document.idx")
    r = F.fetch(uri, str(tmp_path / "c4"), http=F.Http(headers={}))
    [failed] = r.by("failed")
    assert isinstance(failed.error, F.TokenRequired) and "member token" in r.text()
    with pytest.raises(DataError, match="none.uri: HTTP 404"):
        F.fetch(f"{url}/metadata/none.uri", str(tmp_path / "x"), http=F.Http(headers={}))


def test_local_metadata_files_and_the_cli(server, tmp_path, capsys):
    from pinchpoint.cli import main

    bucket, url = server
    _publish(bucket, url)
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "tiny-c4.uri").write_bytes(bucket.objects["/metadata/tiny-c4.uri"])
    (meta / "tiny-c4.md5").write_bytes(bucket.objects["/metadata/tiny-c4.md5"])
    dest = tmp_path / "datasets" / "c4"
    rc = main(["data", "fetch", "llama31_8b_c4", "--metadata", str(meta / "tiny-c4.uri"),
               "--to", str(dest), "--jobs", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"dataset=c4 dataset.path={dest}" in out and "fetched 3" in out
    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    for name in F.KNOWN:
        assert name in listed
    assert "llama-3-1-8b-preprocessed-c4-dataset.uri" in listed


def test_members_only_sets_say_how_to_get_access(tmp_path, capsys):
    from pinchpoint.cli import main

    with pytest.raises(F.TokenRequired, match="llama2.mlcommons.org"):
        F.fetch_known("llama2_70b_lora_govreport", to=str(tmp_path))
    assert main(["data", "fetch", "llama2_70b_lora_govreport", "--to", str(tmp_path)]) == 2
    assert "--metadata" in capsys.readouterr().err
    with pytest.raises(DataError, match="not a known dataset"):
        F.resolve("imagenet")
    with pytest.raises(DataError, match="no such metadata file"):
        F.read_metadata(str(tmp_path / "none.uri"), F.Http(headers={}))


def test_md5_lines_in_md5sum_form():
    assert F.parse_md5("0123456789abcdef0123456789abcdef  ./a/b.bin\n"
                       "0123456789ABCDEF0123456789abcdef *c.idx\n\n", "x.md5") == [
        ("0123456789abcdef0123456789abcdef", "a/b.bin"),
        ("0123456789abcdef0123456789abcdef", "c.idx")]
    with pytest.raises(DataError, match="line 1"):
        F.parse_md5("not-a-hash  a.bin\n", "x.md5")
    with pytest.raises(DataError, match="leaves the dataset folder"):
        F.parse_md5("0123456789abcdef0123456789abcdef  ../etc/passwd\n", "x.md5")
