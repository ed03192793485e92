"""Process settings (not per alias): where to listen, what to serve, where state lives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gateway.limits import LimitSettings


@dataclass(frozen=True)
class Settings:
    config_dir: Path = Path("config.example")
    data_dir: Path = Path("var")
    database_url: str | None = None  # default: SQLite in the data directory
    bind: str = "127.0.0.1:8080"
    workers: int = 1
    watch_config: bool = True  # hot reload on changes in config_dir
    refresh_crls: bool = True  # keep CRLs from expiring in the background
    # HTTP-04/06: a PKIOperation is a few KB; 4096-bit keys with chains stay well below these.
    max_body_bytes: int = 256 * 1024
    max_url_bytes: int = 64 * 1024
    # No wait without a deadline (docs/security.md, "deadlines").
    store_timeout: float = 5.0  # overall bound of one store operation, seconds
    read_timeout: float = 5.0  # silence while reading a request; the whole body, seconds
    keep_alive_timeout: float = 5.0  # idle connection, and the whole request head, seconds
    max_connections: int = 1000  # open connections per worker
    # Per worker: concurrency and failure bounds of PKIOperation (docs/security.md, costs).
    limits: LimitSettings = field(default_factory=LimitSettings)

    @property
    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'gateway.sqlite3').resolve()}"
