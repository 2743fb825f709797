"""The CLI's small state file: the last session used with each agent, per server and key.

`~/.config/parley/state.json` (or `$XDG_CONFIG_HOME/parley/state.json`), or the path in
`$PARLEY_STATE`. Shape:

    {"version": 1, "profiles": {"<url> <key fingerprint>": {"last_session": {"<agent id>": "<session id>"}}}}

The API key itself is never written, only a short fingerprint of it, so two tenants on one server
keep their sessions apart. A missing or unreadable file counts as empty; writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

VERSION = 1


def default_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("PARLEY_STATE"):
        return Path(env["PARLEY_STATE"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "parley" / "state.json"


def profile_key(base_url: str, api_key: str | None) -> str:
    """`<url> <fingerprint>`: the key's first 12 hex digits of SHA-256 (`-` when there is none)."""
    fingerprint = hashlib.sha256(api_key.encode()).hexdigest()[:12] if api_key else "-"
    return f"{base_url.rstrip('/')} {fingerprint}"


class State:
    def __init__(self, path: Path, base_url: str, api_key: str | None) -> None:
        self.path = path
        self.profile = profile_key(base_url, api_key)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"version": VERSION, "profiles": {}}
        if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
            return {"version": VERSION, "profiles": {}}
        return data

    def _sessions(self, data: dict[str, Any]) -> dict[str, str]:
        profile = data["profiles"].setdefault(self.profile, {})
        if not isinstance(profile, dict):
            profile = data["profiles"][self.profile] = {}
        sessions = profile.setdefault("last_session", {})
        if not isinstance(sessions, dict):
            sessions = profile["last_session"] = {}
        return sessions

    def _save(self, data: dict[str, Any]) -> None:
        data["version"] = VERSION
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(data, file, indent=2, sort_keys=True)
                file.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def last_session(self, agent_id: str) -> str | None:
        value = self._sessions(self._load()).get(agent_id)
        return value if isinstance(value, str) and value else None

    def remember(self, agent_id: str, session_id: str) -> None:
        data = self._load()
        self._sessions(data)[agent_id] = session_id
        self._save(data)

    def forget_session(self, session_id: str) -> bool:
        """Drop `session_id` wherever this profile remembers it; True when it was remembered."""
        data = self._load()
        sessions = self._sessions(data)
        stale = [agent for agent, remembered in sessions.items() if remembered == session_id]
        for agent in stale:
            del sessions[agent]
        if stale:
            self._save(data)
        return bool(stale)
