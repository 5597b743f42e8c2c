"""`.devstack/state.json`: what the local stack started — pids, ports, folders — read and written under a lock, so
that `up`, `down`, `make run` and the fault tests of one clone never act on each other's half-written record."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devkit.pids import file_lock, write_atomic


def say(message: str) -> None:
    print(f"devstack: {message}", flush=True)


class StackRecord:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.file = folder / "state.json"

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.file.read_text())
        except (OSError, ValueError):
            return {}

    def section(self, name: str) -> dict[str, Any]:
        return self.read().get(name, {})

    def update(self, section: str, **values: Any) -> dict[str, Any]:
        state = self.read()
        state.setdefault(section, {}).update(values)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.file, json.dumps(state, indent=2, sort_keys=True) + "\n")
        return state[section]

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with file_lock(self.folder / "lock"):
            yield
