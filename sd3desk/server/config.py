"""How the server runs: address, token, limits. A server on another address than loopback always
has a token (made once and kept in the config folder)."""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

from sd3desk.core.atomic import atomic_write_bytes
from sd3desk.core.errors import FieldError, InvalidParamsError

DEFAULT_PORT = 7860  # what A1111 and Gradio apps listen on; clients look there first
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


@dataclass(frozen=True)
class ServeConfig:
    """Everything the server needs besides the runtime."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str = ""  # required on every request when set; always set off loopback
    cors_origins: tuple[str, ...] = ()  # web pages allowed to call the API (none by default)
    model: str = ""  # the model for requests that name none ("" = the last one used)
    max_body_bytes: int = 1_000_000  # a txt2img request is a few hundred bytes
    max_picture_body_bytes: int = 64_000_000  # requests with pictures in base64 (img2img)
    max_images_per_request: int = 64  # batch_size x n_iter
    max_waiting_per_client: int = 100  # queued jobs one address may have at a time

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"  # what to open on this computer
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def check(self) -> ServeConfig:
        """Raise InvalidParamsError naming the bad field, else return self."""
        errors = []
        if not 1 <= self.port <= 65535:
            errors.append(FieldError("port", "must be between 1 and 65535"))
        if self.token and len(self.token) < 8:
            errors.append(FieldError("token", "must be at least 8 characters"))
        if not self.host:
            errors.append(FieldError("host", "must be an address, e.g. 127.0.0.1 or 0.0.0.0"))
        if errors:
            raise InvalidParamsError(errors)
        return self


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or name) only reaches this computer."""
    host = host.strip().lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_file(config_dir: Path) -> Path:
    return config_dir / "server-token"


def with_token(config: ServeConfig, config_dir: Path) -> tuple[ServeConfig, bool]:
    """`config` with the token it must have: off loopback without one, the kept one, or a new
    one written to the config folder (readable by this user only). The flag says whether it
    was just made (then it is shown once)."""
    if config.token or config.loopback:
        return config, False
    path = token_file(config_dir)
    try:
        kept = path.read_text("utf-8").strip()
    except OSError:
        kept = ""
    if len(kept) >= 8:
        return replace(config, token=kept), False
    made = secrets.token_urlsafe(24)
    atomic_write_bytes(path, (made + "\n").encode())
    os.chmod(path, 0o600)
    return replace(config, token=made), True
