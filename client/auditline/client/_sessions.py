"""The stored sessions: `auditline login` saves a token per target, every other
command reads it back to call the server as that service account."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from auditline.client._client import Client

__all__ = ["Session", "forget_session", "logged_in_client", "save_session", "sessions_file"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Session:
    """A bearer token and when it expires (seconds since the epoch)."""

    token: str
    expires: float


def sessions_file() -> Path:
    """Where the sessions are kept: `$AUDITLINE_CONFIG_DIR`, else
    `$XDG_CONFIG_HOME/auditline`, else `~/.config/auditline` (the XDG default)."""
    base = os.environ.get("AUDITLINE_CONFIG_DIR")
    if not base:
        config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
        base = str(Path(config_home) / "auditline")
    return Path(base) / "sessions.json"


def _load_sessions() -> dict[str, Any]:
    # Raw JSON, so that saving one target rewrites every other entry as it was.
    path = sessions_file()
    if not path.exists():
        return {}
    try:
        sessions = json.loads(path.read_text())
    except ValueError:
        sessions = None
    if not isinstance(sessions, dict):
        raise ValueError(f"{path} is not a sessions file: remove it and log in again")
    return sessions


def save_session(target: str, session: Session) -> Path:
    """Store the session for `target` beside the others; returns the file."""
    path = sessions_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    sessions = _load_sessions()
    sessions[target] = {"token": session.token, "expires": session.expires}
    # Created owner-only: the token is as good as the keys until it expires.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(sessions, out)
    return path


def forget_session(target: str) -> None:
    """Drop the stored session for `target` (after a logout)."""
    sessions = _load_sessions()
    if sessions.pop(target, None) is not None:
        fd = os.open(sessions_file(), os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w") as out:
            json.dump(sessions, out)


def logged_in_client(target: str, **connection: Any) -> Client:
    """A client using the stored session for `target` (reached as `connection` says:
    `Client`'s TLS options); exits when there is none."""
    stored = _load_sessions().get(target)
    if stored is None or stored["expires"] < time.time():
        raise SystemExit(
            f"auditline: not logged in to {target} (or the session expired): run `auditline login`"
        )
    return Client(target, token=stored["token"], **connection)
