"""The Models dialog under pytest-qt, downloading the tiny test model from a fake Hugging Face Hub.

Every way of getting a model is driven through the dialog's own buttons: the models found on
disk, a local file or folder, a download (with a wrong token, cancelled, size only) and the test
model. The downloads land in the test's own standard Hugging Face cache, where resolve_model
looks for a repo id, so they prove the model is really usable afterwards.
"""

from __future__ import annotations

import json
import pickle
import threading
from pathlib import Path

import pytest
from fakehub import GOOD_TOKEN, SERVED_CHUNK, FakeHub, FakeRepo, python_threads
from PySide6.QtCore import Qt, QThreadPool
from PySide6.QtWidgets import QPushButton
from tinytaesd import cache_taesd3, write_tiny_taesd3

from sd3desk.core import downloads
from sd3desk.core.downloads import PREVIEW_DECODER_REPO
from sd3desk.core.errors import ModelError
from sd3desk.inference.discovery import find_taesd3
from sd3desk.inference.models import ModelKind, resolve_model
from sd3desk.runtime.catalog import ModelCatalog
from sd3desk.ui import model_setup_dialog
from sd3desk.ui.model_setup_dialog import ModelSetupDialog
from sd3desk.ui.preview_decoder_box import ON_DISK

TINY = "test/tiny-sd3"
WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"  # the tiny model's biggest file
LEFT = Qt.MouseButton.LeftButton
TIMEOUT_MS = 10_000


@pytest.fixture(autouse=True)
def no_threads_left():
    """Whatever a test started (download thread, Hub server, request threads) has ended."""
    before = python_threads()
    yield
    assert python_threads() <= before


@pytest.fixture
def pool():
    """The catalog's own thread pool, drained after the test so no search outlives it."""
    pool = QThreadPool()
    yield pool
    pool.waitForDone()


@pytest.fixture
def open_dialog(qtbot, tmp_path, pool):
    """Opens the dialog on a catalog of `model_dirs`; waits for its download thread at the end."""
    made: list[ModelSetupDialog] = []

    def open_(model_dirs=(), endpoint: str | None = None) -> ModelSetupDialog:
        catalog = ModelCatalog(tuple(model_dirs), pool=pool)
        dialog = ModelSetupDialog(catalog, endpoint=endpoint, cache_dir=None)
        qtbot.addWidget(dialog)
        dialog.show()
        made.append(dialog)
        return dialog

    yield open_
    for dialog in made:
        dialog.cancel()
        qtbot.waitUntil(lambda d=dialog: not d.busy(), timeout=TIMEOUT_MS)
    pool.waitForDone()
    qtbot.wait(10)  # deliver the last queued reports while the dialogs still exist


@pytest.fixture
def tiny_hub(hub: FakeHub, tiny_model_dir: Path) -> FakeHub:
    """The fake Hub also serving the real tiny model folder as TINY."""
    hub.repos[TINY] = FakeRepo.from_folder(tiny_model_dir)
    return hub


@pytest.fixture
def emitted():
    """Collects what a dialog's model_chosen carries: `emitted.watch(dialog)`."""

    class Emitted(list):
        def watch(self, dialog: ModelSetupDialog) -> None:
            dialog.model_chosen.connect(self.append)

    return Emitted()


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def assert_no_model_in_cache(repo: str) -> None:
    """resolve_model refuses the repo and no snapshot holds a model_index.json."""
    with pytest.raises(ModelError):
        resolve_model(repo)
    assert list(hub_cache().glob("models--*/snapshots/*/model_index.json")) == []


def wait_idle(qtbot, dialog: ModelSetupDialog) -> None:
    """The download thread has ended and its last report has reached the dialog."""
    qtbot.waitUntil(lambda: not dialog.busy(), timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: dialog.download_button.isEnabled(), timeout=TIMEOUT_MS)


def download_repo(qtbot, dialog: ModelSetupDialog, repo: str) -> list:
    """Click Download and wait for model_chosen; returns what it carried."""
    dialog.repo.setText(repo)
    with qtbot.waitSignal(dialog.model_chosen, timeout=TIMEOUT_MS) as chosen:
        qtbot.mouseClick(dialog.download_button, LEFT)
    wait_idle(qtbot, dialog)
    return chosen.args


# ------------------------------------------------------------------ downloading


def test_download_of_the_tiny_model_is_found_as_a_cache_model(qtbot, open_dialog, tiny_hub):
    dialog = open_dialog(endpoint=tiny_hub.url)
    progress_seen: list[int] = []
    dialog.download_progress.valueChanged.connect(progress_seen.append)

    assert download_repo(qtbot, dialog, TINY) == [TINY]
    assert dialog.result() == dialog.DialogCode.Accepted
    assert TINY in dialog.size_label.text() and "ready" in dialog.size_label.text()
    assert dialog.download_error.isHidden()
    assert progress_seen and progress_seen == sorted(progress_seen) and progress_seen[-1] == 1000

    source = resolve_model(TINY)
    assert source.kind is ModelKind.hub and source.reference == TINY
    assert source.path.is_relative_to(hub_cache())
    index = json.loads((source.path / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert {"transformer", "vae"} <= source.parts
    # What the app needs arrived byte for byte (with T5: the box is ticked by default).
    served = tiny_hub.repos[TINY].files
    for path in (WEIGHTS, "vae/diffusion_pytorch_model.safetensors", "model_index.json"):
        assert (source.path / path).read_bytes() == served[path]
    assert (source.path / "text_encoder_3" / "model.safetensors").exists()
    assert tiny_hub.file_gets()[-1].endswith("/model_index.json")
    # The catalog looks again after a download, and finds the new model in the cache.
    qtbot.waitUntil(
        lambda: TINY in [e.reference for e in dialog.catalog.entries], timeout=TIMEOUT_MS
    )


def test_wrong_token_is_named_and_nothing_is_installed(qtbot, open_dialog, tiny_hub, emitted):
    dialog = open_dialog(endpoint=tiny_hub.url)
    emitted.watch(dialog)
    dialog.repo.setText(TINY)
    dialog.token.setText("hf_typo")
    qtbot.mouseClick(dialog.download_button, LEFT)
    qtbot.waitUntil(lambda: dialog.download_error.isVisible(), timeout=TIMEOUT_MS)
    wait_idle(qtbot, dialog)

    message = dialog.download_error.text()
    assert "refused the token" in message
    assert f"{tiny_hub.url}/settings/tokens" in message
    assert emitted == [] and dialog.isVisible()
    assert dialog.download_progress.isHidden()
    assert tiny_hub.file_gets() == []
    assert_no_model_in_cache(TINY)

    # The good token gets through once corrected.
    dialog.token.setText(GOOD_TOKEN)
    assert download_repo(qtbot, dialog, TINY) == [TINY]
    assert dialog.download_error.isHidden()
    assert resolve_model(TINY).kind is ModelKind.hub


def test_cancel_mid_file_leaves_no_model_and_a_second_download_completes(
    qtbot, open_dialog, tiny_hub, emitted
):
    served = tiny_hub.repos[TINY].files
    assert max(served, key=lambda p: len(served[p])) == WEIGHTS
    assert len(served[WEIGHTS]) > 20 * SERVED_CHUNK
    tiny_hub.slow[WEIGHTS] = 0.05  # about 2 s for the whole file: the cancel lands inside it
    dialog = open_dialog(endpoint=tiny_hub.url)
    emitted.watch(dialog)
    dialog.repo.setText(TINY)
    qtbot.mouseClick(dialog.download_button, LEFT)
    assert dialog.busy() and dialog.cancel_download.isEnabled()
    assert not dialog.download_button.isEnabled()
    # The bar names the file in flight; then wait for some of its bytes.
    bar = dialog.download_progress
    qtbot.waitUntil(lambda: bar.format().endswith(WEIGHTS), timeout=TIMEOUT_MS)
    before_weights = bar.value()
    qtbot.waitUntil(lambda: bar.value() > before_weights, timeout=TIMEOUT_MS)
    qtbot.mouseClick(dialog.cancel_download, LEFT)
    wait_idle(qtbot, dialog)

    assert "cancelled" in dialog.size_label.text().lower()
    assert not dialog.busy() and not dialog.cancel_download.isEnabled()
    assert dialog.download_error.isHidden() and dialog.isVisible()
    assert emitted == []
    assert_no_model_in_cache(TINY)
    assert tiny_hub.gets(WEIGHTS) == 1 and tiny_hub.gets("model_index.json") == 1  # the plan's
    assert not (hub_cache() / "models--test--tiny-sd3" / "refs" / "main").exists()

    tiny_hub.slow.clear()
    assert download_repo(qtbot, dialog, TINY) == [TINY]
    assert resolve_model(TINY).kind is ModelKind.hub
    assert tiny_hub.gets(WEIGHTS) == 2


def test_closing_the_dialog_cancels_the_download(qtbot, open_dialog, tiny_hub, emitted):
    tiny_hub.slow[WEIGHTS] = 0.05
    dialog = open_dialog(endpoint=tiny_hub.url)
    emitted.watch(dialog)
    dialog.repo.setText(TINY)
    qtbot.mouseClick(dialog.download_button, LEFT)
    qtbot.waitUntil(lambda: dialog.download_progress.format().endswith(WEIGHTS), timeout=TIMEOUT_MS)
    dialog.reject()
    assert not dialog.isVisible()
    qtbot.waitUntil(lambda: not dialog.busy(), timeout=TIMEOUT_MS)
    assert emitted == []  # a download left to run would have finished and chosen the model
    assert_no_model_in_cache(TINY)


def test_check_size_shows_sizes_and_downloads_nothing(qtbot, open_dialog, tiny_hub, emitted):
    served = tiny_hub.repos[TINY].files
    listing = [(path, len(data)) for path, data in served.items()]
    wanted = downloads.select_files(listing)
    without_t5 = downloads.select_files(listing, with_t5=False)
    assert len(without_t5) < len(wanted)
    dialog = open_dialog(endpoint=tiny_hub.url)
    emitted.watch(dialog)
    dialog.repo.setText(TINY)

    def check_size() -> str:
        qtbot.mouseClick(dialog.check_button, LEFT)
        qtbot.waitUntil(lambda: "files," in dialog.size_label.text(), timeout=TIMEOUT_MS)
        wait_idle(qtbot, dialog)
        return dialog.size_label.text()

    total = sum(size for _, size in wanted)
    smaller = sum(size for _, size in without_t5)
    text = check_size()
    assert text.startswith(f"{len(wanted)} files, {total / 1e6:.1f} MB in all;")
    assert f"{total / 1e6:.1f} MB to fetch (0.0 MB already here)" in text
    assert "free on disk" in text and "Not enough" not in text

    dialog.with_t5.setChecked(False)
    assert check_size().startswith(f"{len(without_t5)} files, {smaller / 1e6:.1f} MB in all;")

    assert emitted == [] and dialog.isVisible() and dialog.download_error.isHidden()
    assert dialog.download_progress.isHidden()
    # Only the model index (for the pipeline class and the token) was read, never a weight.
    assert {p.rpartition("/")[2] for p in tiny_hub.file_gets()} == {"model_index.json"}
    assert not list(hub_cache().glob("models--*/blobs/*"))
    assert_no_model_in_cache(TINY)


# ------------------------------------------------------------------ a local file or folder


@pytest.fixture(scope="module")
def single_file(tmp_path_factory) -> Path:
    from sd3desk.inference.testmodel import write_test_single_file

    return write_test_single_file(tmp_path_factory.mktemp("single") / "tiny-sd3.safetensors")


def pick(monkeypatch, path: Path) -> None:
    """The file dialogs answer `path` (they cannot be driven offscreen)."""

    class Picker:
        @staticmethod
        def getOpenFileName(*args, **kwargs):
            return str(path), "safetensors (*.safetensors)"

        @staticmethod
        def getExistingDirectory(*args, **kwargs):
            return str(path)

    monkeypatch.setattr(model_setup_dialog, "QFileDialog", Picker)


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_local_models_are_accepted(
    qtbot, open_dialog, monkeypatch, kind, single_file, tiny_model_dir
):
    path = single_file if kind == "file" else tiny_model_dir
    pick(monkeypatch, path)
    dialog = open_dialog()
    button = dialog.findChild(
        QPushButton, "pickFileButton" if kind == "file" else "pickFolderButton"
    )
    with qtbot.waitSignal(dialog.model_chosen, timeout=TIMEOUT_MS) as chosen:
        qtbot.mouseClick(button, LEFT)
    assert chosen.args == [str(path)]
    assert dialog.local_error.isHidden()
    assert dialog.result() == dialog.DialogCode.Accepted


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("notes.safetensors", b"just some text, not a checkpoint\n", "not a valid .safetensors"),
        ("model.ckpt", pickle.dumps({"state_dict": {}}), "is a pickle-based model file"),
    ],
)
def test_a_file_that_is_no_model_is_refused(
    qtbot, open_dialog, emitted, tmp_path, name, content, expected
):
    path = tmp_path / name
    path.write_bytes(content)
    dialog = open_dialog()
    emitted.watch(dialog)
    assert not dialog.use_local(str(path))
    assert dialog.local_error.isVisible()
    message = dialog.local_error.text()
    assert expected in message
    assert emitted == [] and dialog.isVisible()


def test_a_folder_without_model_index_is_refused(qtbot, open_dialog, emitted, tmp_path):
    dialog = open_dialog()
    emitted.watch(dialog)
    assert not dialog.use_local(str(tmp_path))
    assert "no model_index.json" in dialog.local_error.text()
    assert emitted == []


# ------------------------------------------------------------------ the test model, found models


def test_test_model_button_chooses_test(qtbot, open_dialog):
    dialog = open_dialog()
    button = dialog.findChild(QPushButton, "useTestModelButton")
    with qtbot.waitSignal(dialog.model_chosen, timeout=TIMEOUT_MS) as chosen:
        qtbot.mouseClick(button, LEFT)
    assert chosen.args == ["test"]
    assert dialog.result() == dialog.DialogCode.Accepted


def test_found_models_list_the_tiny_folder(qtbot, open_dialog, tiny_model_dir):
    dialog = open_dialog(model_dirs=(tiny_model_dir,))
    assert dialog.found.count() == 0  # the search runs on the pool and reports through `found`
    with qtbot.waitSignal(dialog.catalog.found, timeout=TIMEOUT_MS):
        pass
    assert dialog.found.count() == 1
    item = dialog.found.item(0)
    assert item.data(Qt.ItemDataRole.UserRole) == str(tiny_model_dir)
    assert "tiny-sd3" in item.text() and str(tiny_model_dir) in item.text()
    assert "Hugging Face cache" in dialog.found_note.text()

    button = dialog.findChild(QPushButton, "useFoundButton")
    with qtbot.waitSignal(dialog.model_chosen, timeout=TIMEOUT_MS) as chosen:
        qtbot.mouseClick(button, LEFT)
    assert chosen.args == [str(tiny_model_dir)]


def test_nothing_found_says_so(qtbot, open_dialog):
    dialog = open_dialog()
    with qtbot.waitSignal(dialog.catalog.found, timeout=TIMEOUT_MS):
        pass
    assert dialog.found.count() == 0
    assert "None yet" in dialog.found_note.text()


def test_closing_the_dialog_mid_download_cancels_without_waiting(qtbot, monkeypatch):
    """The download may be stuck on a slow connection: closing the dialog must not wait for it."""
    import time

    from PySide6.QtCore import QCoreApplication, QEvent

    started, release = threading.Event(), threading.Event()
    seen: list[threading.Event] = []

    def slow_fetch(repo, token, with_t5, plan_only, cancel, report, where):
        seen.append(cancel)
        started.set()
        release.wait(10)  # a stalled connection
        return None

    monkeypatch.setattr(model_setup_dialog, "_fetch", slow_fetch)
    dialog = ModelSetupDialog(ModelCatalog(), cache_dir=None)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.show()
    dialog.start_download()
    assert started.wait(5)
    begin = time.perf_counter()
    dialog.reject()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)  # the dialog goes now
    assert time.perf_counter() - begin < 1.0
    assert seen[0].is_set()  # the download was told to stop
    release.set()
    for thread in [t for t in threading.enumerate() if t.name.startswith("sd3desk-background")]:
        thread.join(5)


# ---------------------------------------------------------------- the preview decoder (TAESD3)


TAESD_WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def tiny_taesd3(tmp_path_factory) -> Path:
    return write_tiny_taesd3(tmp_path_factory.mktemp("taesd3") / "built")


@pytest.fixture
def taesd3_hub(hub: FakeHub, tiny_taesd3: Path) -> FakeHub:
    """The fake Hub also serving the tiny decoder as madebyollin/taesd3, with the extras the real
    repo carries (the original .pth weights, a README) that must stay behind."""
    files = FakeRepo.from_folder(tiny_taesd3).files
    files |= {"taesd3_decoder.pth": b"pickle" * 100, "README.md": b"# TAESD3\n"}
    hub.repos[PREVIEW_DECODER_REPO] = FakeRepo(files)
    return hub


def test_the_decoder_is_downloaded_and_then_said_to_be_on_disk(qtbot, open_dialog, taesd3_hub):
    dialog = open_dialog(endpoint=taesd3_hub.url)
    box = dialog.preview_box
    qtbot.waitUntil(lambda: box.button.isVisible(), timeout=TIMEOUT_MS)  # looked: not there
    assert box.button.text() == "Download the preview decoder (TAESD3, ~10 MB)"
    assert box.note.text() != ON_DISK
    progress: list[int] = []
    box.progress.valueChanged.connect(progress.append)

    qtbot.mouseClick(box.button, LEFT)
    assert dialog.busy() and not box.button.isEnabled()
    qtbot.waitUntil(lambda: box.note.text() == ON_DISK, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: not dialog.busy(), timeout=TIMEOUT_MS)

    assert box.button.isHidden() and box.error.isHidden() and dialog.isVisible()
    assert progress and progress[-1] == 1000
    folder = find_taesd3()
    assert folder is not None and folder.is_relative_to(hub_cache())
    assert box.note.toolTip() == str(folder)
    served = taesd3_hub.repos[PREVIEW_DECODER_REPO]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", TAESD_WEIGHTS]
    assert (folder / TAESD_WEIGHTS).read_bytes() == served.files[TAESD_WEIGHTS]
    assert (folder.parent.parent / "refs" / "main").read_text() == served.sha
    assert sorted(p.rpartition("/")[2] for p in taesd3_hub.file_gets()) == [
        "config.json",
        TAESD_WEIGHTS,
    ]


def test_a_decoder_on_disk_is_said_so_at_once(qtbot, open_dialog, hub, tiny_taesd3):
    cache_taesd3(hub_cache(), tiny_taesd3)
    dialog = open_dialog(endpoint=hub.url)
    qtbot.waitUntil(lambda: dialog.preview_box.note.text() == ON_DISK, timeout=TIMEOUT_MS)
    assert dialog.preview_box.button.isHidden()
    assert hub.log == []  # nothing was asked of the Hub


def test_a_failed_download_says_why_and_installs_nothing(qtbot, open_dialog, hub):
    dialog = open_dialog(endpoint=hub.url)  # a Hub without the repo
    box = dialog.preview_box
    qtbot.waitUntil(lambda: box.button.isVisible(), timeout=TIMEOUT_MS)
    qtbot.mouseClick(box.button, LEFT)
    qtbot.waitUntil(lambda: box.error.isVisible(), timeout=TIMEOUT_MS)
    assert "not found" in box.error.text()
    qtbot.waitUntil(lambda: not dialog.busy(), timeout=TIMEOUT_MS)
    assert box.button.isEnabled() and box.progress.isHidden()
    assert find_taesd3() is None
