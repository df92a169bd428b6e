"""Re-run exactly from the gallery: the queue makes a pixel-identical image on the tiny model."""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtCore import QItemSelectionModel

from sd3desk.core.gallery import GalleryIndex
from sd3desk.core.jobs import JobQueue, JobState
from sd3desk.core.params import GenerationParams
from sd3desk.core.settings import Device
from sd3desk.core.store import Store
from sd3desk.runtime.runner import Runner
from sd3desk.runtime.worker import Worker, WorkerConfig, default_engine_factory
from sd3desk.ui.gallery_model import GalleryModel
from sd3desk.ui.gallery_panel import GalleryPanel
from sd3desk.ui.thumbnails import ThumbnailLoader


def test_rerun_exactly_gives_identical_pixels(qtbot, tmp_path, tiny_model_dir):
    store = Store(tmp_path / "sd3desk.db")
    config = WorkerConfig(
        out_dir=tmp_path / "out",
        cache_dir=tmp_path / "cache",
        sources_dir=tmp_path / "sources",
        device=Device.cpu,
    )
    runner = Runner(JobQueue(store))
    gallery = GalleryIndex(store, tmp_path / "out")
    panel = GalleryPanel(GalleryModel(gallery, ThumbnailLoader(tmp_path / "cache")))
    qtbot.addWidget(panel)
    finished = []

    def on_job(event) -> None:
        job = event.job
        if job.state is JobState.finished:
            for path in job.outputs:
                gallery.add(path)  # what the window does with every finished image
            finished.append(job)
            panel.model.refresh()

    runner.job_changed.connect(on_job)
    panel.rerun_requested.connect(runner.enqueue)
    runner.attach_workers([Worker(0, config, default_engine_factory)])
    try:
        runner.enqueue(
            GenerationParams(
                "a cat",
                seed=None,
                steps=4,
                guidance_scale=4.0,
                width=256,
                height=256,
                model=str(tiny_model_dir),
            )
        )
        qtbot.waitUntil(lambda: len(finished) == 1, timeout=60_000)
        panel.view.selectionModel().select(
            panel.model.index(0), QItemSelectionModel.SelectionFlag.Select
        )
        panel.actions_["rerun"].trigger()
        qtbot.waitUntil(lambda: len(finished) == 2, timeout=60_000)
    finally:
        runner.stop()
    first, again = finished[0].outputs[0], finished[1].outputs[0]
    assert first != again
    assert finished[1].params.seed == finished[0].params.seed
    with Image.open(first) as a, Image.open(again) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert gallery.count() == 2
