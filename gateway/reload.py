"""Hot reload: watch the config directory, rebuild, swap; keep the last good snapshot.

The directory is watched, not single files: Kubernetes updates a mounted ConfigMap by
writing a new timestamped directory and swapping the `..data` symlink to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, awatch

from gateway.errors import ConfigError, ConfigIssue
from gateway.metrics import Metrics
from gateway.registry import Snapshot

log = logging.getLogger(__name__)

KEY_MATERIAL = frozenset({".pem", ".key", ".crt", ".cer", ".secret"})
# Edits land within a second: coalesce bursts briefly, then rebuild.
DEBOUNCE_MS = 100
# A failure that is not a ConfigError is a bug; its text stays in the log (it may quote a value).
_UNEXPECTED = "the configuration could not be built (internal error, see the server log)"
STEP_MS = 25


@dataclass(frozen=True)
class State:
    snapshot: Snapshot
    errors: tuple[ConfigIssue, ...] = ()
    generation: int = 1


class Reloader:
    """Owns the current snapshot; ``current()`` is what each request reads once."""

    def __init__(self, build: Callable[[], Snapshot], initial: Snapshot, metrics: Metrics) -> None:
        self._build = build
        self._state = State(initial)
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        metrics.set("scep_config_last_reload_success", 1)
        metrics.set("scep_config_errors", 0)

    @property
    def state(self) -> State:
        return self._state

    def current(self) -> Snapshot:
        return self._state.snapshot

    async def wait_for(self, predicate: Callable[[State], bool]) -> State:
        """Wait until a load (good or bad) leaves a state satisfying ``predicate``."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self._state))
            return self._state

    async def _publish(self, state: State) -> None:
        self._state = state
        async with self._changed:
            self._changed.notify_all()

    async def reload(self) -> bool:
        """Rebuild from disk; swap only if everything built. True if swapped."""
        async with self._lock:
            try:
                snapshot = await asyncio.to_thread(self._build)
            except Exception as exc:  # the watcher must outlive any bug in building
                if isinstance(exc, ConfigError):
                    error = exc
                else:
                    log.exception("building the configuration failed")
                    error = ConfigError([ConfigIssue(".", "$", _UNEXPECTED)])
                for issue in error.issues:
                    log.error("config: %s", issue)
                await self._publish(
                    State(self._state.snapshot, error.issues, self._state.generation)
                )
                self._metrics.inc("scep_config_reloads_total", result="failure")
                self._metrics.set("scep_config_last_reload_success", 0)
                self._metrics.set("scep_config_errors", len(error.issues))
                log.error("configuration not applied; still serving the last good one")
                return False
            # One assignment: a request that already read the old snapshot finishes on it.
            await self._publish(State(snapshot, (), self._state.generation + 1))
            self._metrics.inc("scep_config_reloads_total", result="success")
            self._metrics.set("scep_config_last_reload_success", 1)
            self._metrics.set("scep_config_errors", 0)
            log.info(
                "configuration %d applied: aliases %s",
                self._state.generation,
                ", ".join(sorted(snapshot.aliases)),
            )
            return True

    async def watch(self, config_dir: Path, data_dir: Path, stop: asyncio.Event) -> None:
        """Reload on any change in the config directory, and on key material in the data
        directory (`ca rollover` and `ca issue-ra` write there; the database does not count).

        No await before ``awatch`` starts: its first step creates the OS watch synchronously,
        so an edit made right after the task's first step is already seen."""
        async for _changes in awatch(
            config_dir,
            data_dir,
            watch_filter=_relevant_to(config_dir),
            stop_event=stop,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            recursive=True,
        ):
            await self.reload()


def _relevant_to(config_dir: Path) -> Callable[[Change, str], bool]:
    config_root = os.path.abspath(config_dir)

    def relevant(_change: Change, path: str) -> bool:
        return path.startswith(config_root) or Path(path).suffix in KEY_MATERIAL

    return relevant
