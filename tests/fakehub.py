"""A local imitation of the Hugging Face Hub, shared by the download and the model-dialog tests.

`hub` (a fixture, registered for every test by tests/conftest.py) serves a few SD3-like repos on
127.0.0.1 and switches huggingface_hub online for the test; `FakeRepo.from_folder` serves a real
model folder from disk, so a test can download the tiny test model for real.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

SD3 = "test/sd3"
GATED = "test/gated-sd3"
NOT_DIFFUSERS = "test/single-file"
SDXL = "test/sdxl"
GOOD_TOKEN = "hf_good"
ACCEPTED_TOKEN = "hf_accepted"  # its owner accepted the gated repo's licence
BIG = "transformer/diffusion_pytorch_model.safetensors"
SERVED_CHUNK = 64 * 1024
LFS_SUFFIXES = (".safetensors", ".model", ".bin", ".png")


def _bytes(name: str, size: int) -> bytes:
    return random.Random(name).randbytes(size)


def _json(data: dict) -> bytes:
    return json.dumps(data).encode()


def sd3_layout(pipeline: str = "StableDiffusion3Pipeline") -> dict[str, bytes]:
    """A small SD3 diffusers repo, with the extras a real one carries that must be skipped."""
    files = {
        "model_index.json": _json({"_class_name": pipeline, "_diffusers_version": "0.35.0"}),
        "scheduler/scheduler_config.json": _json({"shift": 3.0}),
        "transformer/config.json": _json({"num_layers": 24}),
        BIG: _bytes(BIG, 2 * 1024 * 1024),
        "vae/config.json": _json({"latent_channels": 16}),
        "vae/diffusion_pytorch_model.safetensors": _bytes("vae", 40_000),
        "tokenizer_3/spiece.model": _bytes("spiece", 8_000),
        "tokenizer_3/tokenizer_config.json": _json({"model_max_length": 256}),
        "tokenizer_3/special_tokens_map.json": _json({"eos_token": "</s>"}),
        "text_encoder_3/config.json": _json({"d_model": 4096}),
        "text_encoder_3/model.safetensors.index.json": _json({"weight_map": {}}),
        "text_encoder_3/model-00001-of-00002.safetensors": _bytes("t5a", 30_000),
        "text_encoder_3/model-00002-of-00002.safetensors": _bytes("t5b", 20_000),
        # Variant duplicates of plain weights, a pickle, root-level checkpoints and extras.
        "text_encoder_3/model.safetensors.index.fp16.json": _json({"weight_map": {}}),
        "text_encoder_3/model.fp16-00001-of-00002.safetensors": _bytes("t5h", 15_000),
        "transformer/diffusion_pytorch_model.bin": _bytes("pickle", 5_000),
        "sd3_medium.safetensors": _bytes("single", 50_000),
        "text_encoders/clip_g.safetensors": _bytes("clip_g", 7_000),
        "README.md": b"# SD3\n",
        "LICENSE.md": b"licence\n",
        "mmdit.png": _bytes("png", 3_000),
    }
    for n, part in ((1, ""), (2, "_2")):
        files[f"text_encoder{part}/config.json"] = _json({"hidden_size": 768 * n})
        files[f"text_encoder{part}/model.safetensors"] = _bytes(f"clip{n}", 10_000 * n)
        files[f"text_encoder{part}/model.fp16.safetensors"] = _bytes(f"clip{n}h", 5_000 * n)
        # Distinct contents: identical files share one blob, which would upset GET counts.
        files[f"tokenizer{part}/vocab.json"] = _json({"a": 0, "b": n})
        files[f"tokenizer{part}/merges.txt"] = b"#version: 0.2\na %d\n" % n
        files[f"tokenizer{part}/tokenizer_config.json"] = _json({"model_max_length": 77 + n})
    return files


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    gated: bool = False

    def __post_init__(self) -> None:
        self.sha = hashlib.sha1(repr(sorted(self.files)).encode()).hexdigest()

    @classmethod
    def from_folder(cls, folder: Path, gated: bool = False) -> FakeRepo:
        """Every file under `folder` (by POSIX path relative to it), bytes read now."""
        folder = Path(folder)
        files = {
            path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        }
        if not files:
            raise ValueError(f"{folder} holds no files to serve")
        return cls(files, gated=gated)

    @staticmethod
    def etag(path: str, data: bytes) -> tuple[str, bool]:
        """The Hub's ETag: sha256 for LFS files, the git blob id for the rest."""
        if path.endswith(LFS_SUFFIXES):
            return hashlib.sha256(data).hexdigest(), True
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(), False


@dataclass
class FakeHub:
    """What the test server serves, how it misbehaves, and what it was asked."""

    repos: dict[str, FakeRepo] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=lambda: {GOOD_TOKEN, ACCEPTED_TOKEN})
    accepted: set[str] = field(default_factory=lambda: {ACCEPTED_TOKEN})
    slow: dict[str, float] = field(default_factory=dict)  # path -> seconds between chunks
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> bytes, next GET only
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gets(self, path: str) -> int:
        """How many times a file's bytes were asked for."""
        return sum(1 for m, p, _ in self.log if m == "GET" and p.endswith(f"/{path}"))

    def file_gets(self) -> list[str]:
        """The /resolve/ paths whose bytes were asked for, in order."""
        with self.lock:
            return [p for m, p, _ in self.log if m == "GET" and "/resolve/" in p]


class HubHandler(BaseHTTPRequestHandler):
    """The Hub's model API and /resolve/ file endpoint, as far as huggingface_hub needs them."""

    # HTTP/1.0: one request per connection, so no idle keep-alive thread outlives a test.
    protocol_version = "HTTP/1.0"
    hub: FakeHub

    def log_message(self, format, *args):
        pass  # keep test output clean

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        with self.hub.lock:
            self.hub.log.append((self.command, path, self.headers.get("Range")))
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or None
        if token is not None and token not in self.hub.tokens:
            return self._error(401, message="Invalid credentials in Authorization header")
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            repo_id = "/".join(parts[2:4])
            if repo := self._repo(repo_id, token):
                self._api(repo_id, repo, "blobs" in parse_qs(url.query))
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo_id, revision, file = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if repo := self._repo(repo_id, token):
                self._file(repo, revision, file, token, body)
        else:
            self._error(404)

    def _repo(self, repo_id: str, token: str | None) -> FakeRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            # Like the Hub: 401 without a token (it might be private), 404 with one.
            self._error(404 if token else 401, code="RepoNotFound")
        return repo

    def _api(self, repo_id: str, repo: FakeRepo, blobs: bool) -> None:
        siblings = []
        for path, data in sorted(repo.files.items()):
            entry: dict = {"rfilename": path}
            if blobs:
                etag, lfs = repo.etag(path, data)
                entry["size"] = len(data)
                entry["blobId"] = hashlib.sha1(path.encode()).hexdigest()
                if lfs:
                    entry["lfs"] = {"size": len(data), "sha256": etag, "pointerSize": 134}
                else:
                    entry["blobId"] = etag
            siblings.append(entry)
        payload = {
            "id": repo_id,
            "sha": repo.sha,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "siblings": siblings,
        }
        self._send(200, _json(payload), {"Content-Type": "application/json"})

    def _file(self, repo: FakeRepo, revision: str, file: str, token: str | None, body: bool):
        if revision not in ("main", repo.sha):
            return self._error(404, code="RevisionNotFound")
        if repo.gated and token not in self.hub.accepted:
            return self._error(
                403 if token else 401,
                code="GatedRepo",
                message="Access to this model is restricted; accept its conditions first",
            )
        data = repo.files.get(file)
        if data is None:
            return self._error(404, code="EntryNotFound", extra={"X-Repo-Commit": repo.sha})
        etag, lfs = repo.etag(file, data)
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if lfs:
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))}
        start, status = 0, 200
        if body and (wanted := self.headers.get("Range")):
            start, status = int(wanted.removeprefix("bytes=").split("-")[0]), 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if not body:
            return self._send(200, b"", headers, length=len(data))
        with self.hub.lock:
            drop = self.hub.drop_after.pop(file, None)
        self._send(
            status, data[start:], headers, delay=self.hub.slow.get(file, 0.0), drop_after=drop
        )

    def _error(self, status: int, code: str = "", message: str = "", extra=None) -> None:
        headers = dict(extra or {})
        if code:
            headers["X-Error-Code"] = code
        if message:
            headers["X-Error-Message"] = message
        self._send(status, _json({"error": message or code}), headers)

    def _send(self, status, data: bytes, headers, length=None, delay=0.0, drop_after=None):
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data) if length is None else length))
            self.end_headers()
            sent = 0
            while sent < len(data):
                if drop_after is not None and sent >= drop_after:
                    return  # close mid-body, as a broken connection would
                chunk = data[sent : sent + SERVED_CHUNK]
                self.wfile.write(chunk)
                sent += len(chunk)
                if delay:
                    time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a cancelled download)


class HubServer(ThreadingHTTPServer):
    # ThreadingHTTPServer makes daemon request threads, which server_close() does not wait for:
    # a slow file still being written to a client that went away would outlive the test.
    daemon_threads = False


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A fake Hub on 127.0.0.1 with SD3, gated, non-diffusers and SDXL repos; online mode on.

    The standard Hugging Face cache (what a download with cache_dir=None fills and what
    resolve_model reads) is a fresh folder of this test's: tests/conftest.py's empty cache is
    shared by the whole session, and a model downloaded into it would show up in later tests.
    """
    import huggingface_hub
    from huggingface_hub import constants

    # tests/conftest.py switches the Hub off for every other test.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    standard_cache = tmp_path / "standard-hf-cache"
    standard_cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(standard_cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(standard_cache))
    # No saved login of the developer's may reach the server.
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    # Chunks as small as the server's, so progress and cancel act within a file.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", SERVED_CHUNK)

    threads_before = python_threads()
    state = FakeHub()
    state.repos = {
        SD3: FakeRepo(sd3_layout()),
        GATED: FakeRepo(sd3_layout(), gated=True),
        NOT_DIFFUSERS: FakeRepo({"sd3.safetensors": b"x" * 100, "README.md": b"# x\n"}),
        SDXL: FakeRepo(sd3_layout("StableDiffusionXLPipeline")),
    }
    handler = type("Handler", (HubHandler,), {"hub": state})
    server = HubServer(("127.0.0.1", 0), handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield state
    server.shutdown()
    server.server_close()  # joins the request threads
    thread.join()
    huggingface_hub.close_session()
    left = python_threads() - threads_before
    assert not left, f"threads outlived the test: {left}"


def python_threads() -> set[threading.Thread]:
    """Threads Python started. Qt's pool threads show up as dummy threads once Python code ran
    on them and stay listed after they end; the tests check those through their pools."""
    return {t for t in threading.enumerate() if not isinstance(t, threading._DummyThread)}
