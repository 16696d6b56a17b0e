"""A tiny async SQL layer over SQLite (default) and PostgreSQL (asyncpg), same statements for both.

Statements are written with ``?`` placeholders; PostgreSQL gets them renumbered ``$1, $2…``.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from inferplane.configfile import ConfigError


class Database(Protocol):
    async def execute(self, sql: str, *args: Any) -> int: ...
    async def fetch(self, sql: str, *args: Any) -> list[tuple]: ...
    async def executemany(self, sql: str, rows: list[tuple]) -> None: ...
    async def close(self) -> None: ...


class SQLiteDatabase:
    """One connection in WAL mode, used from a worker thread; every statement commits."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()

    def _run(self, fn: Any) -> Any:
        with self._lock:
            return fn()

    async def execute(self, sql: str, *args: Any) -> int:
        return await asyncio.to_thread(self._run, lambda: self._conn.execute(sql, args).rowcount)

    async def fetch(self, sql: str, *args: Any) -> list[tuple]:
        return await asyncio.to_thread(self._run, lambda: self._conn.execute(sql, args).fetchall())

    async def executemany(self, sql: str, rows: list[tuple]) -> None:
        def many() -> None:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(sql, rows)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        await asyncio.to_thread(self._run, many)

    async def close(self) -> None:
        await asyncio.to_thread(self._run, self._conn.close)


_PLACEHOLDER = re.compile(r"\?")


def _pg(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class PostgresDatabase:
    """An asyncpg pool; statements autocommit, ``executemany`` runs in one transaction."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str) -> PostgresDatabase:
        try:
            import asyncpg
        except ImportError:
            raise ConfigError("database: PostgreSQL needs the 'asyncpg' package (pip install asyncpg)") from None
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=8)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ConfigError(f"database: cannot connect to {_redact(url)}: {exc}") from None
        return cls(pool)

    async def execute(self, sql: str, *args: Any) -> int:
        status = await self._pool.execute(_pg(sql), *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def fetch(self, sql: str, *args: Any) -> list[tuple]:
        return [tuple(row) for row in await self._pool.fetch(_pg(sql), *args)]

    async def executemany(self, sql: str, rows: list[tuple]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(_pg(sql), rows)

    async def close(self) -> None:
        await self._pool.close()


def _redact(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


async def open_database(url: str) -> Database:
    """``sqlite:///relative/or//absolute/path``, a bare path, or ``postgresql://…``."""
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresDatabase.connect(url)
    if url.startswith("sqlite://"):
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url[len("sqlite://"):]
    elif "://" in url:
        raise ConfigError(f"database: unsupported URL {_redact(url)!r} (use sqlite:///PATH or postgresql://…)")
    else:
        path = url
    try:
        return SQLiteDatabase(path)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"database: cannot open SQLite file {path}: {exc}") from None
