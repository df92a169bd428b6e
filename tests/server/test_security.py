"""The door guard and the limits, in process (FastAPI's TestClient against the real app and a
real runtime on an in-memory queue)."""

from __future__ import annotations

import base64
import threading

import pytest
from fastapi.testclient import TestClient

from sd3desk.core.settings import AppPaths, Settings
from sd3desk.runtime.runtime import IN_MEMORY, build_runtime
from sd3desk.server.app import create_app
from sd3desk.server.bridge import RuntimeBridge
from sd3desk.server.config import ServeConfig, token_file, with_token
from sd3desk.server.door import Door

TOKEN = "s3cret-token-for-tests"
LOCAL = "http://127.0.0.1:7860"


@pytest.fixture
def make_client(tmp_path, qtbot):
    runtimes = []

    def make(base_url: str = LOCAL, **config) -> TestClient:
        runtime = build_runtime(AppPaths.default(tmp_path), Settings(), database=IN_MEMORY)
        runtimes.append(runtime)
        door = Door(runtime, RuntimeBridge(runtime), ServeConfig(model="test", **config))
        return TestClient(create_app(door, web=False), base_url=base_url)

    yield make
    for runtime in runtimes:
        runtime.stop()


def in_thread(qtbot, call):
    """Run `call` off the runtime's thread (this one), which keeps answering runner commands."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    qtbot.waitUntil(lambda: not thread.is_alive(), timeout=30_000)
    return result[0]


def basic(password: str, user: str = "anyone") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_loopback_without_a_token_answers_only_to_loopback_names(make_client):
    client = make_client()
    assert client.get("/api/v1/queue").status_code == 200
    for host in ("evil.example", "evil.example:7860", "192.168.1.20:7860"):
        answer = client.get("/api/v1/queue", headers={"Host": host})
        assert answer.status_code == 403 and "localhost only" in answer.json()["detail"]
    for host in ("localhost:7860", "[::1]:7860", "127.0.0.1"):
        assert client.get("/api/v1/queue", headers={"Host": host}).status_code == 200


def test_web_pages_of_other_origins_get_nothing_and_no_cors_headers(make_client):
    client = make_client()
    for origin in ("https://evil.example", "http://localhost:3000", "http://127.0.0.1:9999"):
        answer = client.post(
            "/api/v1/queue/pause", headers={"Origin": origin, "Content-Type": "text/plain"}
        )
        assert answer.status_code == 403, origin
        assert "access-control-allow-origin" not in answer.headers
        preflight = client.options(
            "/api/v1/jobs",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
    same = client.get("/api/v1/queue", headers={"Origin": LOCAL})
    assert same.status_code == 200 and "access-control-allow-origin" not in same.headers


def test_an_allow_listed_origin_gets_cors(make_client):
    client = make_client(cors_origins=("http://localhost:3000",))
    answer = client.get("/api/v1/queue", headers={"Origin": "http://localhost:3000"})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert (
        client.get("/api/v1/queue", headers={"Origin": "https://evil.example"}).status_code == 403
    )


def test_with_a_token_every_request_carries_it(make_client):
    client = make_client(base_url="http://192.168.1.20:7860", host="0.0.0.0", token=TOKEN)
    refused = client.get("/api/v1/queue")
    assert refused.status_code == 401 and "token" in refused.json()["detail"]
    assert refused.headers["www-authenticate"].startswith("Basic")  # a browser asks for it
    for header in ("Bearer wrong-token-value", basic("wrong"), "Bearer", "Basic !!!", "Digest x"):
        assert client.get("/api/v1/queue", headers={"Authorization": header}).status_code == 401
    assert client.get("/api/v1/queue", headers={"Authorization": f"Bearer {TOKEN}"}).is_success
    assert client.get("/sdapi/v1/samplers", headers={"Authorization": basic(TOKEN)}).is_success
    # a page address with the token sets a cookie and drops the token from the address
    visit = client.get(f"/api/v1/queue?token={TOKEN}&x=1", follow_redirects=False)
    assert visit.status_code == 303 and visit.headers["location"] == "/api/v1/queue?x=1"
    assert "HttpOnly" in visit.headers["set-cookie"]
    assert client.get("/api/v1/queue").is_success  # the client keeps the cookie
    client.cookies.clear()
    assert client.get("/api/v1/queue").status_code == 401
    assert client.get("/api/v1/queue?token=wrong", follow_redirects=False).status_code == 401


def test_serving_other_computers_makes_and_keeps_a_token(tmp_path):
    config, made = with_token(ServeConfig(host="0.0.0.0"), tmp_path)
    assert made and len(config.token) >= 24
    assert token_file(tmp_path).stat().st_mode & 0o077 == 0  # this user's only
    again, made_again = with_token(ServeConfig(host="0.0.0.0"), tmp_path)
    assert again.token == config.token and not made_again
    local, _ = with_token(ServeConfig(host="127.0.0.1"), tmp_path)
    assert local.token == ""


def test_limits_refuse_with_413_and_429_and_queue_nothing(make_client, qtbot):
    client = make_client(max_body_bytes=2000, max_picture_body_bytes=4000, max_waiting_per_client=3)
    huge = client.post("/sdapi/v1/txt2img", json={"prompt": "x" * 3000})
    assert huge.status_code == 413 and "2000 bytes" in huge.json()["detail"]
    # a request that may carry pictures has the larger limit, and a limit still
    picture = client.post("/api/v1/jobs", json={"prompt": "x", "source_image": "A" * 5000})
    assert picture.status_code == 413 and "4000 bytes" in picture.json()["detail"]
    many = in_thread(
        qtbot,
        lambda: client.post(
            "/sdapi/v1/txt2img", json={"prompt": "x", "batch_size": 16, "n_iter": 8}
        ),
    )
    assert many.status_code == 413 and "128 images" in many.json()["detail"]
    # no workers here: jobs wait; the fourth from the same address is one too many
    for _ in range(3):
        made = in_thread(qtbot, lambda: client.post("/api/v1/jobs", json={"prompt": "wait"}))
        assert made.status_code == 201
    fourth = in_thread(qtbot, lambda: client.post("/api/v1/jobs", json={"prompt": "one more"}))
    assert fourth.status_code == 429 and "at most 3" in fourth.json()["detail"]
    assert len(client.get("/api/v1/queue").json()["waiting"]) == 3


def test_the_web_page_sends_no_telemetry(tmp_path, monkeypatch):
    """Gradio calls api.gradio.app (version check, analytics) unless told not to: the page must
    not, since sd3desk works offline and tells no one what it runs."""
    analytics = pytest.importorskip("gradio.analytics")
    calls: list[str] = []
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    monkeypatch.setattr(analytics, "version_check", lambda: calls.append("version check"))
    monkeypatch.setattr(analytics, "_do_analytics_request", lambda **kw: calls.append(kw["topic"]))
    runtime = build_runtime(AppPaths.default(tmp_path), Settings(), database=IN_MEMORY)
    try:
        door = Door(runtime, RuntimeBridge(runtime), ServeConfig(model="test"))
        with TestClient(create_app(door, web=True), base_url=LOCAL) as client:
            assert client.get("/").status_code == 200
    finally:
        runtime.stop()
    assert calls == []


def test_requests_are_traced_to_no_telemetry_provider(make_client, monkeypatch):
    """FastAPI traces every request to whatever OpenTelemetry provider the process has (a
    user's environment may set one up): sd3desk's server must hand none of them anything."""
    otel_trace = pytest.importorskip("opentelemetry.trace")
    otel_metrics = pytest.importorskip("opentelemetry.metrics")
    asked: list[str] = []

    class Recording:  # a configured provider, as an SDK or a vendor's agent installs
        def get_tracer(self, *args, **kwargs):
            asked.append("tracer")
            return otel_trace.NoOpTracer()

        def get_meter(self, *args, **kwargs):
            asked.append("meter")
            return otel_metrics.NoOpMeter("test")

    monkeypatch.setattr(otel_trace, "get_tracer_provider", Recording)
    monkeypatch.setattr(otel_metrics, "get_meter_provider", Recording)
    client = make_client()
    assert client.get("/api/v1/queue").is_success
    assert client.post("/api/v1/jobs", json={"steps": 0}).status_code == 422
    assert asked == []


def test_images_of_the_gallery_folders_are_served_by_id_and_nothing_else(tmp_path, qtbot):
    """A folder the user added to the gallery (a batch's --out) is served by image id, as the
    output folder is; its files are not reachable by path, nor are those of a folder dropped
    from the gallery."""
    from PIL import Image

    from sd3desk.core.gallery import GalleryIndex
    from sd3desk.core.store import Store

    added = tmp_path / "batch-out"
    added.mkdir()
    Image.new("RGB", (32, 32), "teal").save(added / "one.png")
    paths = AppPaths.default(tmp_path / "data")
    settings = Settings(gallery_dirs=(str(added),))
    runtime = build_runtime(paths, settings, database=IN_MEMORY)
    try:
        GalleryIndex(Store(paths.database), runtime.out_dir, settings.gallery_dirs).scan()
        door = Door(runtime, RuntimeBridge(runtime), ServeConfig(model="test"))
        client = TestClient(create_app(door, web=False), base_url=LOCAL)
        image = client.get("/api/v1/images").json()["images"][0]
        assert client.get(image["url"]).content == (added / "one.png").read_bytes()
        assert client.get(f"/api/v1/files/{added / 'one.png'}").status_code == 404
        runtime.settings = Settings()  # the folder is no longer shown
        assert client.get(image["url"]).status_code == 404
    finally:
        runtime.stop()
