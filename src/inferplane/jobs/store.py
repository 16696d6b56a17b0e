"""Durable metadata of files, batches and per-request results (SQLite or PostgreSQL).

Files and batches belong to a tenant (the fairness id the gateway sets from the API key); reads
that pass a ``tenant`` see only that tenant's objects, ``tenant=None`` (the worker) sees all.

A request's result is recorded with ``state='pending' → 'done'`` in one conditional UPDATE, so a
result is stored at most once even when a restarted worker sends the request again.
"""

from __future__ import annotations

from typing import Any

import orjson

from inferplane.jobs.db import Database

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS files (
        id TEXT PRIMARY KEY, bytes BIGINT NOT NULL, created_at BIGINT NOT NULL,
        filename TEXT NOT NULL, purpose TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS batches (
        id TEXT PRIMARY KEY, created_at BIGINT NOT NULL, status TEXT NOT NULL, data TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS requests (
        batch_id TEXT NOT NULL, idx INTEGER NOT NULL, custom_id TEXT NOT NULL, url TEXT NOT NULL,
        body TEXT NOT NULL, state TEXT NOT NULL, is_error INTEGER NOT NULL DEFAULT 0, result TEXT,
        PRIMARY KEY (batch_id, idx))""",
    "CREATE INDEX IF NOT EXISTS requests_state ON requests (batch_id, state)",
    "CREATE INDEX IF NOT EXISTS batches_created ON batches (created_at, id)",
)
#: Columns added after the first release: added to older databases at start.
MIGRATIONS = (
    "ALTER TABLE files ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE batches ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
)

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")


class Store:
    """Typed access to the three tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def init(self) -> None:
        for statement in SCHEMA:
            await self.db.execute(statement)
        for statement in MIGRATIONS:
            try:
                await self.db.execute(statement)
            except Exception as exc:  # sqlite3 and asyncpg raise different types
                if "duplicate column" not in str(exc) and "already exists" not in str(exc):
                    raise

    # files
    async def add_file(self, record: dict[str, Any], tenant: str = "") -> None:
        await self.db.execute(
            "INSERT INTO files (id, bytes, created_at, filename, purpose, deleted, tenant) VALUES (?, ?, ?, ?, ?, 0, ?) "
            "ON CONFLICT (id) DO UPDATE SET bytes = excluded.bytes, deleted = 0",
            record["id"], record["bytes"], record["created_at"], record["filename"], record["purpose"], tenant)

    async def get_file(self, file_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        sql, args = _scoped("SELECT id, bytes, created_at, filename, purpose FROM files WHERE id = ? AND deleted = 0",
                            [file_id], tenant)
        rows = await self.db.fetch(sql, *args)
        if not rows:
            return None
        fid, size, created, filename, purpose = rows[0]
        return {"id": fid, "object": "file", "bytes": int(size), "created_at": int(created), "filename": filename,
                "purpose": purpose, "status": "processed", "status_details": None, "expires_at": None}

    async def list_files(self, purpose: str | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
        sql, args = _scoped("SELECT id FROM files WHERE deleted = 0", [], tenant)
        rows = await self.db.fetch(sql + " ORDER BY created_at DESC, id DESC", *args)
        files = [await self.get_file(r[0]) for r in rows]
        return [f for f in files if f and (purpose is None or f["purpose"] == purpose)]

    async def delete_file(self, file_id: str, tenant: str | None = None) -> bool:
        sql, args = _scoped("UPDATE files SET deleted = 1 WHERE id = ? AND deleted = 0", [file_id], tenant)
        return await self.db.execute(sql, *args) > 0

    # batches
    async def add_batch(self, batch: dict[str, Any], tenant: str = "") -> None:
        await self.db.execute("INSERT INTO batches (id, created_at, status, data, tenant) VALUES (?, ?, ?, ?, ?)",
                              batch["id"], batch["created_at"], batch["status"], _dumps(batch), tenant)

    async def batch_tenant(self, batch_id: str) -> str:
        rows = await self.db.fetch("SELECT tenant FROM batches WHERE id = ?", batch_id)
        return rows[0][0] if rows else ""

    async def save_batch(self, batch: dict[str, Any], expect_status: str | None = None) -> bool:
        """Store ``batch``; with ``expect_status``, only if the stored status still is that (no lost cancel)."""
        sql = "UPDATE batches SET status = ?, data = ? WHERE id = ?"
        args: list[Any] = [batch["status"], _dumps(batch), batch["id"]]
        if expect_status is not None:
            sql += " AND status = ?"
            args.append(expect_status)
        return await self.db.execute(sql, *args) > 0

    async def get_batch(self, batch_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        sql, args = _scoped("SELECT data FROM batches WHERE id = ?", [batch_id], tenant)
        rows = await self.db.fetch(sql, *args)
        return orjson.loads(rows[0][0]) if rows else None

    async def list_batches(self, after: str | None, limit: int,
                           tenant: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        """Newest first; ``after`` is the id of the last batch of the previous page."""
        if after:
            sql, args = _scoped("SELECT created_at FROM batches WHERE id = ?", [after], tenant)
            anchor = await self.db.fetch(sql, *args)
            if not anchor:
                return [], False
            sql, args = _scoped("SELECT data FROM batches WHERE (created_at < ? OR (created_at = ? AND id < ?))",
                                [anchor[0][0], anchor[0][0], after], tenant)
        else:
            sql, args = _scoped("SELECT data FROM batches WHERE 1 = 1", [], tenant)
        rows = await self.db.fetch(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", *args, limit + 1)
        batches = [orjson.loads(r[0]) for r in rows]
        return batches[:limit], len(batches) > limit

    async def active_batch_ids(self) -> list[tuple[str, str]]:
        rows = await self.db.fetch(
            "SELECT id, status FROM batches WHERE status IN (?, ?, ?, ?) ORDER BY created_at, id", *ACTIVE)
        return [(r[0], r[1]) for r in rows]

    # requests
    async def add_requests(self, batch_id: str, rows: list[tuple[int, str, str, str]]) -> None:
        """(idx, custom_id, url, body JSON) rows; re-adding after a crash is harmless."""
        await self.db.executemany(
            "INSERT INTO requests (batch_id, idx, custom_id, url, body, state) VALUES (?, ?, ?, ?, ?, 'pending') "
            "ON CONFLICT (batch_id, idx) DO NOTHING",
            [(batch_id, *row) for row in rows])

    async def pending_requests(self, batch_id: str) -> list[tuple[int, str, str, str]]:
        rows = await self.db.fetch(
            "SELECT idx, custom_id, url, body FROM requests WHERE batch_id = ? AND state = 'pending' ORDER BY idx",
            batch_id)
        return [(int(r[0]), r[1], r[2], r[3]) for r in rows]

    async def record_result(self, batch_id: str, idx: int, line: dict[str, Any], is_error: bool) -> bool:
        """Store one result line; False when the request already had one (never written twice)."""
        return await self.db.execute(
            "UPDATE requests SET state = 'done', is_error = ?, result = ? "
            "WHERE batch_id = ? AND idx = ? AND state = 'pending'",
            1 if is_error else 0, _dumps(line), batch_id, idx) > 0

    async def counts(self, batch_id: str) -> dict[str, int]:
        rows = await self.db.fetch(
            "SELECT state, is_error, COUNT(*) FROM requests WHERE batch_id = ? GROUP BY state, is_error", batch_id)
        total = completed = failed = 0
        for state, is_error, n in rows:
            total += int(n)
            if state == "done":
                if int(is_error):
                    failed += int(n)
                else:
                    completed += int(n)
        return {"total": total, "completed": completed, "failed": failed}

    async def results(self, batch_id: str, is_error: bool) -> list[str]:
        rows = await self.db.fetch(
            "SELECT result FROM requests WHERE batch_id = ? AND state = 'done' AND is_error = ? ORDER BY idx",
            batch_id, 1 if is_error else 0)
        return [r[0] for r in rows]


def _scoped(sql: str, args: list[Any], tenant: str | None) -> tuple[str, list[Any]]:
    """Add ``AND tenant = ?`` to a WHERE clause when a tenant is given."""
    if tenant is None:
        return sql, args
    return sql + " AND tenant = ?", [*args, tenant]


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
