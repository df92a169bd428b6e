"""The ASGI app: sd3desk's API at /api/v1, AUTOMATIC1111's at /sdapi/v1, the web page at /,
the OpenAPI schema at /docs, all behind the door guard."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse
from fastapi.telemetry import TelemetryConfig

from sd3desk import __version__
from sd3desk.server import a1111, errors, native
from sd3desk.server.door import Door
from sd3desk.server.security import Guard

log = logging.getLogger(__name__)
NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}
NO_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>sd3desk</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>sd3desk</h1><p>The web page needs the optional <code>web</code> extra, which this
installation does not have:</p><pre>pip install "sd3desk[web]"</pre>
<p>The APIs work without it: <a href="/docs">/docs</a> describes sd3desk's own
(<code>/api/v1</code>) and the AUTOMATIC1111-compatible one (<code>/sdapi/v1</code>).</p>
</body></html>"""


def create_app(door: Door, web: bool = True) -> Any:
    """The server's ASGI app for `door`; with `web`, the Gradio page when Gradio is installed."""
    api = FastAPI(
        title="sd3desk",
        version=__version__,
        summary="Stable Diffusion 3 on this computer, through its persistent queue",
        docs_url="/docs",
        openapi_url="/openapi.json",
        # FastAPI's OpenTelemetry hooks would trace every request (prompts in the URLs of
        # A1111 clients, clients' addresses) to any provider or OTEL_* exporter set up in the
        # process or its environment: a local generator reports nothing anywhere
        telemetry=NO_TELEMETRY,
    )
    api.state.door = door
    api.state.a1111_requests = a1111.Requests()
    errors.install(api)
    api.include_router(native.router)
    api.include_router(a1111.router)
    if door.config.cors_origins:
        # only the origins the user listed; Gradio then adds no CORS headers of its own
        api.add_middleware(
            CORSMiddleware,
            allow_origins=list(door.config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    page = _page(door) if web else None
    if page is None:

        @api.get("/", response_class=HTMLResponse, include_in_schema=False)
        def no_page() -> str:
            return NO_PAGE

        return Guard(api, door.config)
    import gradio as gr

    served = gr.mount_gradio_app(
        api,
        page,
        path="/",
        allowed_paths=[str(door.out_dir)],
        footer_links=["api"],
        run_history=False,
        show_error=True,
    )
    return Guard(served, door.config)


def _page(door: Door) -> Any:
    try:
        from sd3desk.server.web import build_page
    except ImportError as exc:
        log.info("no web page: %s (install sd3desk[web])", exc)
        return None
    return build_page(door)
