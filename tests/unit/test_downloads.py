"""Planning and downloading SD3 models against a local imitation of the Hugging Face Hub."""

from __future__ import annotations

import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fakehub import (
    ACCEPTED_TOKEN,
    BIG,
    GATED,
    GOOD_TOKEN,
    NOT_DIFFUSERS,
    SD3,
    SDXL,
    SERVED_CHUNK,
    FakeHub,
)

from sd3desk.core import downloads
from sd3desk.core.downloads import DownloadCancelled, DownloadError, download, plan_download

# The fake Hub (FakeHub, FakeRepo, the `hub` fixture) lives in tests/fakehub.py.


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "hf-cache"


def plan(hub: FakeHub, cache: Path, repo: str = SD3, **kwargs) -> downloads.DownloadPlan:
    return plan_download(repo, cache_dir=cache, endpoint=hub.url, **kwargs)


def fetch(hub: FakeHub, cache: Path, the_plan, **kwargs) -> Path:
    return download(the_plan, cache_dir=cache, endpoint=hub.url, **kwargs)


WANTED_WITHOUT_T5 = {
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "tokenizer_2/merges.txt",
    "tokenizer_2/tokenizer_config.json",
    "tokenizer_2/vocab.json",
    "tokenizer_3/special_tokens_map.json",
    "tokenizer_3/spiece.model",
    "tokenizer_3/tokenizer_config.json",
    "transformer/config.json",
    BIG,
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
}
T5_FILES = {
    "text_encoder_3/config.json",
    "text_encoder_3/model.safetensors.index.json",
    "text_encoder_3/model-00001-of-00002.safetensors",
    "text_encoder_3/model-00002-of-00002.safetensors",
}


# ------------------------------------------------------------------ planning


def test_plan_selects_the_diffusers_layout_and_sizes_it(hub, cache):
    files = hub.repos[SD3].files
    with_t5 = plan(hub, cache)
    assert {path for path, _ in with_t5.files} == WANTED_WITHOUT_T5 | T5_FILES
    assert all(size == len(files[path]) for path, size in with_t5.files)
    assert with_t5.total_bytes == sum(len(files[p]) for p in WANTED_WITHOUT_T5 | T5_FILES)
    assert with_t5.already_bytes == 0
    assert with_t5.needed_bytes == with_t5.total_bytes
    assert with_t5.revision == hub.repos[SD3].sha
    assert with_t5.free_bytes > 0 and with_t5.fits

    without_t5 = plan(hub, cache, with_t5=False)
    # The T5 weights stay behind, its tokenizer does not.
    assert {path for path, _ in without_t5.files} == WANTED_WITHOUT_T5
    assert without_t5.total_bytes == with_t5.total_bytes - sum(len(files[p]) for p in T5_FILES)


def test_variants_are_kept_where_no_plain_weights_exist():
    listing = [("model_index.json", 1), ("vae/model.fp16.safetensors", 5), ("vae/config.json", 2)]
    assert downloads.select_files(listing) == sorted(listing)


def test_plan_reports_what_the_cache_already_holds_and_the_disk_room(hub, cache, monkeypatch):
    first = plan(hub, cache, with_t5=False)
    fetch(hub, cache, first)
    again = plan(hub, cache)
    assert again.already_bytes == first.total_bytes
    assert again.needed_bytes == sum(len(hub.repos[SD3].files[p]) for p in T5_FILES)

    usage = type("Usage", (), {"total": 10**12, "used": 10**12 - 1000, "free": 1000})
    monkeypatch.setattr(downloads.shutil, "disk_usage", lambda _path: usage)
    tight = plan(hub, cache)
    assert tight.free_bytes == 1000 and not tight.fits


def test_wrong_token_is_named(hub, cache):
    with pytest.raises(DownloadError) as caught:
        plan(hub, cache, token="hf_typo")
    assert "refused the token" in caught.value.message
    assert f"{hub.url}/settings/tokens" in caught.value.advice


def test_gated_repo_points_at_the_licence(hub, cache):
    for token in (None, GOOD_TOKEN):
        with pytest.raises(DownloadError) as caught:
            plan(hub, cache, repo=GATED, token=token)
        assert "gated" in caught.value.message
        assert f"{hub.url}/{GATED}" in caught.value.advice
    assert plan(hub, cache, repo=GATED, token=ACCEPTED_TOKEN).files


def test_missing_repo(hub, cache):
    for token in (None, GOOD_TOKEN):
        with pytest.raises(DownloadError, match="test/nothing-here was not found"):
            plan(hub, cache, repo="test/nothing-here", token=token)


def test_invalid_repo_name(hub, cache):
    with pytest.raises(DownloadError, match="not a valid Hugging Face repo name"):
        plan(hub, cache, repo="not a repo!")


def test_repos_that_are_not_sd3_diffusers_folders(hub, cache):
    with pytest.raises(DownloadError, match=r"no model_index\.json"):
        plan(hub, cache, repo=NOT_DIFFUSERS)
    with pytest.raises(DownloadError, match="StableDiffusionXLPipeline model, not Stable"):
        plan(hub, cache, repo=SDXL)


def test_no_network_says_local_models_still_work(hub, cache):
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    endpoint = f"http://127.0.0.1:{closed.server_address[1]}"
    closed.server_close()  # nothing listens on that port any more
    with pytest.raises(DownloadError) as caught:
        plan_download(SD3, cache_dir=cache, endpoint=endpoint)
    assert "cannot reach Hugging Face" in caught.value.message
    assert "already on disk still work offline" in caught.value.message


def test_offline_mode_is_respected(hub, cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        plan(hub, cache)
    assert hub.log == []


# ------------------------------------------------------------------ downloading


def test_download_fills_a_snapshot_the_app_finds(hub, cache):
    from huggingface_hub import snapshot_download

    the_plan = plan(hub, cache)
    seen: list[tuple[int, int, str]] = []
    folder = fetch(hub, cache, the_plan, on_progress=lambda *a: seen.append(a))
    files = hub.repos[SD3].files
    assert folder.name == the_plan.revision
    assert {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} == {
        path for path, _ in the_plan.files
    }
    for path, _ in the_plan.files:
        assert (folder / path).read_bytes() == files[path]
    # Found the way sd3desk.inference.models.hub_snapshot looks for it.
    found = snapshot_download(SD3, cache_dir=cache, local_files_only=True)
    assert Path(found) == folder
    # Progress is per chunk, never goes back, ends at the total, and model_index.json is last.
    assert seen[-1] == (the_plan.total_bytes, the_plan.total_bytes, "model_index.json")
    done = [d for d, _, _ in seen]
    assert done == sorted(done)
    assert sum(1 for _, _, f in seen if f == BIG) > len(files[BIG]) // SERVED_CHUNK
    file_gets = [p for m, p, _ in hub.log if m == "GET" and "/resolve/" in p]
    assert file_gets[-1].endswith("/model_index.json")
    # Nothing the plan skipped was fetched.
    assert hub.gets("sd3_medium.safetensors") == hub.gets("README.md") == 0


def test_gated_download_with_accepted_token(hub, cache):
    the_plan = plan(hub, cache, repo=GATED, token=ACCEPTED_TOKEN)
    folder = download(the_plan, token=ACCEPTED_TOKEN, cache_dir=cache, endpoint=hub.url)
    assert (folder / "model_index.json").exists()


def test_dropped_connection_resumes_with_a_range_request(hub, cache):
    the_plan = plan(hub, cache, with_t5=False)
    hub.drop_after[BIG] = 5 * SERVED_CHUNK
    folder = fetch(hub, cache, the_plan)
    assert (folder / BIG).read_bytes() == hub.repos[SD3].files[BIG]
    ranges = [r for m, p, r in hub.log if m == "GET" and p.endswith(BIG)]
    assert ranges == [None, f"bytes={5 * SERVED_CHUNK}-"]


def test_cancel_leaves_no_model_and_a_second_run_resumes(hub, cache):
    the_plan = plan(hub, cache)
    snapshot = cache / f"models--{SD3.replace('/', '--')}" / "snapshots" / the_plan.revision
    hub.slow[BIG] = 0.05  # 1.6 s in all, so the cancel surely lands mid-file
    cancel = threading.Event()
    big_started = threading.Event()
    outcome: list[BaseException] = []

    def on_progress(done: int, total: int, file: str) -> None:
        if file == BIG and done > 0:
            big_started.set()

    def worker() -> None:
        try:
            fetch(hub, cache, the_plan, on_progress=on_progress, cancel=cancel)
        except BaseException as exc:
            outcome.append(exc)

    # The way the UI runs it: in a worker thread, cancelled from another one.
    thread = threading.Thread(target=worker)
    thread.start()
    assert big_started.wait(5)
    cancel.set()
    thread.join(5)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], DownloadCancelled)
    # No partial model: nothing of this run is left in the snapshot.
    assert not (snapshot / "model_index.json").exists()
    assert not snapshot.exists() or not any(snapshot.iterdir())
    assert not (cache / f"models--{SD3.replace('/', '--')}" / "refs" / "main").exists()

    # Files go in path order with model_index.json last: all before BIG were complete.
    finished = {path for path, _ in the_plan.files if path < BIG} - {"model_index.json"}
    assert {p: hub.gets(p) for p in finished} == {p: 1 for p in finished}
    resumed = plan(hub, cache)
    sizes = dict(the_plan.files)
    assert resumed.already_bytes == sum(sizes[p] for p in finished)

    hub.slow.clear()
    folder = fetch(hub, cache, resumed)
    assert (folder / "model_index.json").exists()
    for path, _ in the_plan.files:
        assert (folder / path).read_bytes() == hub.repos[SD3].files[path]
    # Files finished before the cancel were not fetched again.
    assert all(hub.gets(path) == 1 for path in finished)
    assert hub.gets(BIG) == 2


def test_cancel_keeps_entries_of_earlier_downloads(hub, cache):
    folder = fetch(hub, cache, plan(hub, cache, with_t5=False))
    before = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    cancel = threading.Event()

    def on_progress(done: int, total: int, file: str) -> None:
        if file.startswith("text_encoder_3/") and not file.endswith(".json"):
            cancel.set()

    with pytest.raises(DownloadCancelled):
        fetch(hub, cache, plan(hub, cache), on_progress=on_progress, cancel=cancel)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == before


def test_error_mid_download_removes_the_partial_snapshot(hub, cache):
    the_plan = plan(hub, cache, with_t5=False)
    hub.tokens.discard(GOOD_TOKEN)  # the token is revoked between plan and download
    with pytest.raises(DownloadError, match="refused the token"):
        download(the_plan, token=GOOD_TOKEN, cache_dir=cache, endpoint=hub.url)
    vanished = replace(the_plan, files=(*the_plan.files, ("vae/gone.safetensors", 1)))
    with pytest.raises(DownloadError, match="changed on Hugging Face"):
        fetch(hub, cache, vanished)
    snapshot = cache / f"models--{SD3.replace('/', '--')}" / "snapshots" / the_plan.revision
    assert not snapshot.exists() or not any(snapshot.iterdir())


def test_not_enough_disk_names_both_sizes(hub, cache, monkeypatch):
    huge = replace(plan(hub, cache), needed_bytes=20 * 10**9)
    usage = type("Usage", (), {"total": 10**12, "used": 0, "free": 5 * 10**9})
    monkeypatch.setattr(downloads.shutil, "disk_usage", lambda _path: usage)
    requests_before = len(hub.log)
    with pytest.raises(DownloadError) as caught:
        fetch(hub, cache, huge)
    assert "20.0 GB" in caught.value.message and "5.0 GB" in caught.value.message
    assert len(hub.log) == requests_before
