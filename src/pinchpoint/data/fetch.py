"""Fetch the real MLPerf Training datasets from MLCommons' R2 bucket, as the MLCommons R2
downloader does, into the storage tier's datasets folder (``pinchpoint data fetch NAME``).

The format, as the downloader reads it (github.com/mlcommons/r2-downloader, mlc-r2-downloader.sh;
the ``-j`` rule from its tests/test-parallel-download.sh):

* A dataset is named by a metadata URL ``https://HOST/metadata/<name>.uri``. The ``.uri`` file's
  body is the dataset's base URL (fetched with ``wget -qO-``; trailing whitespace dropped).
* Beside it, ``https://HOST/metadata/<name>.md5`` lists the files in ``md5sum`` output form, one
  per line: 32 lowercase hex digits, whitespace, the path relative to the dataset (an optional
  leading ``./`` is stripped; ``md5sum``'s binary-mode ``*`` marker is accepted here too).
* Each file's URL is ``<base URL>/<path>`` and it lands at ``<download dir>/<path>`` (wget
  ``-nH -x --cut-dirs=<depth of the base path>``); the ``.md5`` is copied into the download
  folder and checked there with ``md5sum -c`` after the download.
* Resume is ``wget --continue`` (an HTTP Range request from the partial file's size, written
  under the final name); redirects are not followed (``--max-redirect=0``); 500/502/503 are
  retried. Files go over parallel connections (``-j N`` / ``MLC_PARALLEL_JOBS``; by default 1
  below 20 files, else 4, never more than the file count).
* Members-only sets sit behind Cloudflare Access: the script detects it from a HEAD on the
  ``.uri`` (a redirect to ``*.cloudflareaccess.com`` or ``/cdn-cgi/access/login``), then logs in
  with ``cloudflared access login URL`` (browser) or a service account (``-s``, with
  ``CF_ACCESS_CLIENT_ID`` / ``CF_ACCESS_CLIENT_SECRET``) and sends ``cf-access-token: TOKEN``
  on every request.

The metadata names come from the benchmark READMEs in github.com/mlcommons/training:
small_llm_pretraining/nemo/README.md (Llama 3.1 8B: llama-3-1-8b-preprocessed-c4-dataset,
llama-3-1-8b-tokenizer), large_language_model_pretraining/nemo/README.md (Llama 3.1 405B, which
trains on the Mixtral 8x22B tokenizer: mixtral-8x22b-preprocessed-c4-dataset,
mixtral-8x22b-tokenizer), recommendation_v2/torchrec_dlrm/README.MD (DLRM v2:
dlrmv2-preprocessed-criteo-click-logs), text_to_image/README.md (FLUX.1:
flux-1-cc12m-preprocessed, flux-1-coco-preprocessed, flux-1-empty-encodings) and
llama2_70b_lora/README.md (GovReport and the model: MLCommons members only; the download
instructions, with their metadata URLs, come after agreeing to the notice at
https://llama2.mlcommons.org, so no public URL is listed here: pass ``--metadata``).

What this module does differently from the script, on purpose: a file is written to
``<path>.part`` and renamed (``os.replace``) to its final name only once its md5 matches, so
nothing half-written or corrupt ever has the final name; a file already present with the right
checksum is skipped (and said so); a partial ``.part`` (or a partial file a wget run left under
the final name) is resumed with a Range request; a checksum mismatch deletes the part, downloads
once more, then fails naming the file, the expected and the actual md5. A 401/403, or a redirect
to the Cloudflare Access login, says the set needs a member token and how to get one; the token
is taken from ``CF_ACCESS_TOKEN`` (what ``cloudflared access token --app=URL`` prints, sent as
``cf-access-token``) or from a service account's ``CF_ACCESS_CLIENT_ID`` /
``CF_ACCESS_CLIENT_SECRET`` (sent as Cloudflare Access's service-token headers). HTTP is the
standard library's urllib.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

from pinchpoint.errors import DataError
from pinchpoint.storage.tier import StorageTier

METADATA_BASE = "https://training.mlcommons-storage.org/metadata/"
DOWNLOADER = "https://github.com/mlcommons/r2-downloader"
STORAGE_INFO = "https://training.mlcommons-storage.org"
CHUNK = 1 << 20
DEFAULT_JOBS = 4
TIMEOUT_S = 60.0
RETRY_STATUS = (500, 502, 503)   # what the downloader retries (wget --retry-on-http-error)


@dataclass(frozen=True)
class KnownSet:
    name: str
    workload: str
    metadata: Optional[str]   # the .uri URL; None: members get it from the instructions page
    dest: str                 # folder under the storage tier's datasets folder
    use: str                  # the run overrides, {path} = the fetched folder
    token: bool               # behind Cloudflare Access (MLCommons members only)
    note: str = ""
    source: str = ""          # where the metadata name is given (mlcommons/training path)
    access: str = ""          # how a member gets access (token sets)


def _uri(name: str) -> str:
    return METADATA_BASE + name + ".uri"


_LLAMA2_ACCESS = ("MLCommons members only: agree to the confidentiality notice at "
                  "https://llama2.mlcommons.org with your organizational email; the download "
                  "instructions page it links gives the metadata .uri URL (pass it with "
                  "--metadata). Not reachable? submit https://mlcommons.org/community/subscribe/ "
                  "with that email.")

KNOWN: dict[str, KnownSet] = {s.name: s for s in [
    KnownSet("llama31_8b_c4", "llama31 8B", _uri("llama-3-1-8b-preprocessed-c4-dataset"),
             "c4/llama31_8b", "dataset=c4 dataset.path={path}", False,
             "Megatron .bin/.idx: c4-train.en_6_text_document, "
             "c4-validation-91205-samples.en_text_document (conf/dataset/c4.yaml's prefixes)",
             "small_llm_pretraining/nemo/README.md"),
    KnownSet("llama31_8b_tokenizer", "llama31 8B", _uri("llama-3-1-8b-tokenizer"),
             "tokenizers/llama31_8b", "", False,
             "the Llama 3.1 8B tokenizer; the run reads token ids, so nothing to set",
             "small_llm_pretraining/nemo/README.md"),
    KnownSet("llama31_405b_c4", "llama31 405B", _uri("mixtral-8x22b-preprocessed-c4-dataset"),
             "c4/llama31_405b", "dataset=c4 dataset.path={path}", False,
             "C4 tokenized with the Mixtral 8x22B tokenizer, which the 405B benchmark uses; "
             "check dataset.train_prefix against the files (c4-train.en_<N>_text_document)",
             "large_language_model_pretraining/nemo/README.md"),
    KnownSet("llama31_405b_tokenizer", "llama31 405B", _uri("mixtral-8x22b-tokenizer"),
             "tokenizers/mixtral_8x22b", "", False,
             "the Mixtral 8x22B tokenizer (5 files); nothing to set",
             "large_language_model_pretraining/nemo/README.md"),
    KnownSet("criteo_multihot", "dlrm_dcnv2", _uri("dlrmv2-preprocessed-criteo-click-logs"),
             "criteo_multihot", "dataset=criteo_multihot dataset.path={path}", False,
             "day_N_{dense,labels}.npy + day_N_sparse_multi_hot.npz; if they land in a subfolder "
             "point dataset.path there", "recommendation_v2/torchrec_dlrm/README.MD"),
    KnownSet("flux1_cc12m_preprocessed", "flux1", _uri("flux-1-cc12m-preprocessed"),
             "flux1/preprocessed/train",
             "dataset=flux_preprocessed dataset.synthetic=false dataset.columnar_format=parquet "
             "dataset.path={parent}", False,
             "the reference's preprocessed embeddings (~2.5 TB with coco); the run reads "
             "preprocessed/{train,val}/*.parquet under dataset.path (if the set lands in a "
             "subfolder, move its shards up)", "text_to_image/README.md"),
    KnownSet("flux1_coco_preprocessed", "flux1", _uri("flux-1-coco-preprocessed"),
             "flux1/preprocessed/val",
             "dataset=flux_preprocessed dataset.synthetic=false dataset.columnar_format=parquet "
             "dataset.path={parent}", False,
             "the validation set's preprocessed embeddings", "text_to_image/README.md"),
    KnownSet("flux1_empty_encodings", "flux1", _uri("flux-1-empty-encodings"),
             "flux1/empty_encodings", "", False,
             "the reference's empty-caption encodings (classifier-free guidance dropout)",
             "text_to_image/README.md"),
    KnownSet("llama2_70b_lora_govreport", "llama2_70b_lora", None, "govreport",
             "dataset=govreport dataset.path={path}", True,
             "the tokenized, packed SCROLLS GovReport (train/validation parquet)",
             "llama2_70b_lora/README.md", _LLAMA2_ACCESS),
    KnownSet("llama2_70b_lora_model", "llama2_70b_lora", None, "models/llama2_70b_fused_qkv", "",
             True, "the Llama 2 70B base model (fused QKV); model.scale=full reads "
             "model.base_checkpoint=PATH as Hugging Face safetensors: check the fetched format",
             "llama2_70b_lora/README.md",
             _LLAMA2_ACCESS),
]}

# A workload's name fetches every set it needs.
GROUPS: dict[str, tuple[str, ...]] = {
    "llama31_8b": ("llama31_8b_c4", "llama31_8b_tokenizer"),
    "llama31_405b": ("llama31_405b_c4", "llama31_405b_tokenizer"),
    "flux1": ("flux1_cc12m_preprocessed", "flux1_coco_preprocessed", "flux1_empty_encodings"),
}


def default_datasets_dir() -> str:
    """The datasets folder of the default run config's storage tier (storage=local, whose root is
    ``${oc.env:PINCHPOINT_LOCAL_ROOT,${output_root}/storage/local}`` with output_root=outputs),
    relative to the current folder as the run's is. Another tier: pass ``--to``."""
    root = os.environ.get("PINCHPOINT_LOCAL_ROOT") or os.path.join("outputs", "storage", "local")
    return StorageTier("local", root).datasets_dir()


def resolve(name: str) -> list[KnownSet]:
    if name in GROUPS:
        return [KNOWN[n] for n in GROUPS[name]]
    if name in KNOWN:
        return [KNOWN[name]]
    raise DataError(name, "not a known dataset; known: " + ", ".join(sorted(KNOWN) + sorted(GROUPS))
                    + " (or pass --metadata URL_OR_FILE for any R2 set)")


# --- errors ------------------------------------------------------------------------------------

class TokenRequired(DataError):
    """The bucket answered 401/403 or redirected to the Cloudflare Access login."""

    def __init__(self, url: str, status: str, how: str = ""):
        super().__init__(url, f"{status}: this set needs an MLCommons member token. " +
                         (how or token_help(url)))


def token_help(url: str) -> str:
    return (f"Members log in with Cloudflare Access (see {DOWNLOADER} and {STORAGE_INFO}): run "
            f"`cloudflared access login {url}` then `export CF_ACCESS_TOKEN=$(cloudflared access "
            f"token --app={url})`, or export a service account's CF_ACCESS_CLIENT_ID and "
            f"CF_ACCESS_CLIENT_SECRET; then rerun.")


class ChecksumMismatch(DataError):
    def __init__(self, path: str, expected: str, actual: str):
        self.expected, self.actual = expected, actual
        super().__init__(path, f"md5 {actual} does not match the listed {expected} "
                               f"(downloaded twice; the part was deleted)")


# --- metadata ----------------------------------------------------------------------------------

_MD5_LINE = re.compile(r"^([0-9a-fA-F]{32})[ \t]+\*?(.+?)\s*$")


def parse_md5(text: str, origin: str) -> list[tuple[str, str]]:
    """``md5sum`` lines -> [(md5, relative path)]; a path is refused if absolute or with '..'."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _MD5_LINE.match(line)
        if not m:
            raise DataError(origin, f"line {n} is not '<32 hex md5> <path>': {line[:80]!r}")
        rel = m.group(2)
        while rel.startswith("./"):
            rel = rel[2:]
        parts = rel.split("/")
        if rel.startswith("/") or ".." in parts or not rel:
            raise DataError(origin, f"line {n}: path {rel!r} leaves the dataset folder")
        out.append((m.group(1).lower(), rel))
    if not out:
        raise DataError(origin, "lists no files")
    return out


@dataclass
class Metadata:
    source: str               # the .uri (URL or local file)
    name: str                 # <name> of <name>.uri
    base_url: str
    md5_text: str
    files: list[tuple[str, str]]


def _is_url(s: str) -> bool:
    return urllib.parse.urlparse(s).scheme in ("http", "https")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):   # wget --max-redirect=0
        return None


class Http:
    """GETs with the downloader's manners: no redirects followed, Cloudflare Access headers from
    the environment, 401/403/login redirects turned into TokenRequired."""

    def __init__(self, headers: Optional[dict[str, str]] = None, timeout: float = TIMEOUT_S,
                 access_help: str = ""):
        self.headers = dict(headers if headers is not None else access_headers())
        self.timeout = timeout
        self.access_help = access_help
        self.opener = urllib.request.build_opener(_NoRedirect)

    def open(self, url: str, start: int = 0):
        req = urllib.request.Request(url, headers=dict(self.headers))
        if start:
            req.add_header("Range", f"bytes={start}-")
        try:
            return self.opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise TokenRequired(url, f"HTTP {e.code}", self.access_help) from None
            if 300 <= e.code < 400:
                loc = e.headers.get("Location", "")
                if "cloudflareaccess.com" in loc or "/cdn-cgi/access/login" in loc:
                    raise TokenRequired(url, f"HTTP {e.code} to the Cloudflare Access login",
                                        self.access_help) from None
                raise DataError(url, f"HTTP {e.code} redirect to {loc!r} (not followed, as the "
                                     f"MLCommons downloader does not)") from None
            raise

    def text(self, url: str) -> str:
        """A metadata file's text; an HTTP or network failure names the URL."""
        try:
            with self.open(url) as r:
                return r.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            raise DataError(url, f"HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise DataError(url, f"cannot be read: {getattr(e, 'reason', e)}") from None


def access_headers() -> dict[str, str]:
    h = {"User-Agent": "pinchpoint-data-fetch"}
    if os.environ.get("CF_ACCESS_TOKEN"):
        h["cf-access-token"] = os.environ["CF_ACCESS_TOKEN"]
    if os.environ.get("CF_ACCESS_CLIENT_ID") and os.environ.get("CF_ACCESS_CLIENT_SECRET"):
        h["CF-Access-Client-Id"] = os.environ["CF_ACCESS_CLIENT_ID"]
        h["CF-Access-Client-Secret"] = os.environ["CF_ACCESS_CLIENT_SECRET"]
    return h


def read_metadata(source: str, http: Http) -> Metadata:
    """The ``.uri`` (URL or local file) and the ``.md5`` beside it, as the downloader finds it."""
    path = urllib.parse.urlparse(source).path if _is_url(source) else source
    if not path.endswith(".uri"):
        raise DataError(source, "a dataset metadata file ends with .uri (the MLCommons "
                                "downloader's <name>.uri, with <name>.md5 beside it)")
    name = os.path.basename(path)[:-len(".uri")]
    if not name:
        raise DataError(source, "no dataset name before .uri")
    if _is_url(source):
        md5_src = urllib.parse.urljoin(source, name + ".md5")
        uri_text, md5_text = http.text(source), http.text(md5_src)
    else:
        md5_src = os.path.join(os.path.dirname(source), name + ".md5")
        for f in (source, md5_src):
            if not os.path.isfile(f):
                raise DataError(f, "no such metadata file")
        with open(source, encoding="utf-8") as f:
            uri_text = f.read()
        with open(md5_src, encoding="utf-8") as f:
            md5_text = f.read()
    base = uri_text.strip().rstrip("/")
    if not _is_url(base):
        raise DataError(source, f"holds {base[:80]!r}, not the dataset's http(s) base URL")
    return Metadata(source, name, base, md5_text, parse_md5(md5_text, md5_src))


# --- download ----------------------------------------------------------------------------------

def md5_of(path: str, h=None) -> str:
    h = h or hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class FileResult:
    rel: str
    status: str               # fetched | skipped | failed
    bytes: int = 0            # downloaded this run
    resumed_from: int = 0
    detail: str = ""
    error: Optional[Exception] = None


def _transfer(http: Http, url: str, part: str) -> tuple[int, int, hashlib._Hash]:
    """Append the rest of ``url`` to ``part`` (Range from its size). Returns (bytes downloaded,
    resumed-from offset, md5 of the whole part)."""
    start = os.path.getsize(part) if os.path.exists(part) else 0
    try:
        resp = http.open(url, start)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:        # the part is not shorter than the file: start over
            os.remove(part)
            return _transfer(http, url, part)
        raise
    with resp:
        h = hashlib.md5()
        if start and resp.status == 206:
            md5_of(part, h)
            mode = "ab"
        else:                              # 200: the server sent the whole file
            start, mode = 0, "wb"
        n = 0
        with open(part, mode) as f:
            for chunk in iter(lambda: resp.read(CHUNK), b""):
                f.write(chunk)
                h.update(chunk)
                n += len(chunk)
            f.flush()
            os.fsync(f.fileno())
    return n, start, h


def fetch_file(http: Http, base_url: str, dest: str, md5: str, rel: str,
               retries: int = 1) -> FileResult:
    final = os.path.join(dest, *rel.split("/"))
    part = final + ".part"
    os.makedirs(os.path.dirname(final), exist_ok=True)
    if os.path.exists(final):
        if md5_of(final) == md5:
            return FileResult(rel, "skipped", detail="present, md5 ok")
        if not os.path.exists(part):       # e.g. wget --continue's partial file: resume it
            os.replace(final, part)
        else:
            os.remove(final)
    url = base_url + "/" + urllib.parse.quote(rel)
    got, first_offset, mismatch = 0, None, None
    for attempt in range(1 + retries):
        try:
            n, offset, h = _transfer(http, url, part)
        except TokenRequired as e:
            return FileResult(rel, "failed", got, detail=str(e), error=e)
        except urllib.error.HTTPError as e:
            if e.code in RETRY_STATUS and attempt < retries:
                continue
            return FileResult(rel, "failed", got, detail=f"{url}: HTTP {e.code}; the .part is "
                              f"kept, rerun to resume", error=e)
        except (urllib.error.URLError, OSError) as e:
            if attempt < retries:
                continue
            return FileResult(rel, "failed", got, detail=f"{url}: {e}; the .part is kept, rerun "
                              f"to resume", error=e)
        got += n
        first_offset = offset if first_offset is None else first_offset
        actual = h.hexdigest()
        if actual == md5:
            os.replace(part, final)
            return FileResult(rel, "fetched", got, resumed_from=first_offset or 0)
        os.remove(part)
        mismatch = ChecksumMismatch(rel, md5, actual)
    return FileResult(rel, "failed", got, detail=str(mismatch), error=mismatch)


@dataclass
class FetchReport:
    name: str
    dest: str
    source: str
    files: list[FileResult] = field(default_factory=list)
    use: str = ""
    note: str = ""

    def by(self, status: str) -> list[FileResult]:
        return [f for f in self.files if f.status == status]

    @property
    def ok(self) -> bool:
        return not self.by("failed")

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def text(self) -> str:
        fetched, skipped, failed = self.by("fetched"), self.by("skipped"), self.by("failed")
        lines = [f"{self.name}: {len(self.files)} file(s) from {self.source} into {self.dest}",
                 f"  fetched {len(fetched)} ({self.bytes:,} bytes downloaded), "
                 f"skipped {len(skipped)} (present, md5 ok), failed {len(failed)}"]
        for f in fetched:
            if f.resumed_from:
                lines.append(f"  resumed {f.rel} from byte {f.resumed_from:,}")
        if skipped:
            shown = ", ".join(f.rel for f in skipped[:5])
            lines.append(f"  skipped: {shown}" + (f" (+{len(skipped) - 5} more)"
                                                  if len(skipped) > 5 else ""))
        for f in failed[:10]:
            lines.append(f"  FAILED {f.rel}: {f.detail}")
        if len(failed) > 10:
            lines.append(f"  ... and {len(failed) - 10} more failed")
        if self.ok and self.use:
            lines.append(f"  then run with: {self.use}")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fetch(source: str, dest: str, jobs: Optional[int] = None, http: Optional[Http] = None,
          name: str = "", use: str = "", note: str = "", retries: int = 1,
          progress: Optional[Callable[[FileResult], None]] = None) -> FetchReport:
    """Fetch the set a ``.uri`` (URL or file) names into ``dest``; every file md5-verified."""
    http = http or Http()
    meta = read_metadata(source, http)
    os.makedirs(dest, exist_ok=True)
    _write_atomic(os.path.join(dest, meta.name + ".md5"), meta.md5_text)  # as the script keeps it
    jobs = max(1, min(jobs or DEFAULT_JOBS, len(meta.files)))
    report = FetchReport(name or meta.name, dest, source, use=use, note=note)
    lock = threading.Lock()

    def one(item):
        md5, rel = item
        r = fetch_file(http, meta.base_url, dest, md5, rel, retries)
        if progress:
            with lock:
                progress(r)
        return r

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        report.files = list(pool.map(one, meta.files))
    return report


def fetch_known(name: str, to: Optional[str] = None, metadata: Optional[str] = None,
                jobs: Optional[int] = None, http: Optional[Http] = None,
                progress: Optional[Callable[[FileResult], None]] = None) -> list[FetchReport]:
    """``pinchpoint data fetch NAME``: a known set (or a workload's group of them), or any R2 set
    when ``metadata`` is given (then NAME only names the folder)."""
    if metadata:
        known = KNOWN.get(name)
        sets = [known or KnownSet(name, "", metadata, name, "", False)]
    else:
        sets = resolve(name)
    reports = []
    for s in sets:
        src = metadata or s.metadata
        if not src:
            raise TokenRequired(s.name, "no public metadata URL", s.access)
        dest = os.path.abspath(to if to and len(sets) == 1 else
                               os.path.join(to or default_datasets_dir(), s.dest))
        reports.append(fetch(src, dest, jobs, http or Http(access_help=s.access), name=s.name,
                             use=_use(s, dest), note=s.note, progress=progress))
    return reports


def _use(s: KnownSet, dest: str) -> str:
    """The run overrides for a set fetched into ``dest``. FLUX.1's sets are two splits of one
    folder: dataset.path is the folder above preprocessed/{train,val}."""
    if "{parent}" not in s.use:
        return s.use.format(path=dest)
    split = os.path.basename(s.dest)
    if os.path.basename(os.path.dirname(dest)) == "preprocessed" and \
            os.path.basename(dest) == split:
        return s.use.format(parent=os.path.dirname(os.path.dirname(dest)))
    return s.use.format(parent="DIR") + f" (with this set at DIR/preprocessed/{split})"


def list_text() -> str:
    lines = []
    for s in KNOWN.values():
        where = s.metadata or "(members only: --metadata URL from the instructions page)"
        lines.append(f"{s.name:28s} {s.workload:16s} {where}")
        use = s.use.format(path=f"<datasets>/{s.dest}",
                           parent=f"<datasets>/{os.path.dirname(os.path.dirname(s.dest))}")
        lines.append(f"{'':28s} -> <datasets>/{s.dest}" + (f"; then {use}" if use else ""))
        for text in (s.note, s.access):
            if text:
                lines.append(f"{'':28s} {text}")
    lines.append("")
    lines.append("groups: " + "; ".join(f"{g} = {' + '.join(v)}" for g, v in GROUPS.items()))
    lines.append(f"<datasets> = {default_datasets_dir()} (storage=local's datasets folder; "
                 f"--to DIR for another)")
    return "\n".join(lines)
