"""Driving batches through their life cycle; resumes whatever was active after a restart.

validating → in_progress → finalizing → completed, or failed (bad input), expired (window over,
unfinished requests go to the error file as ``batch_expired``), cancelling → cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from inferplane.jobs.batches import error_line, result_line
from inferplane.jobs.filestore import FileStore
from inferplane.jobs.jsonl import parse_batch_file
from inferplane.jobs.sender import DeadlineReached, Sender
from inferplane.jobs.store import Store

log = logging.getLogger("inferplane.jobs.worker")


class BatchWorker:
    """One dispatcher per process (several processes must not share one database)."""

    def __init__(self, store: Store, files: FileStore, sender: Sender, poll_interval_s: float = 0.5,
                 max_requests: int | None = None) -> None:
        self.store = store
        self.files = files
        self.sender = sender
        self.poll_interval_s = poll_interval_s
        self.max_requests = max_requests
        self._tasks: dict[str, asyncio.Task] = {}
        self.results_recorded = 0

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:  # the database may be briefly unreachable: try again next poll
                log.exception("batch worker step failed")
            await asyncio.sleep(self.poll_interval_s)

    async def step(self) -> None:
        """Start a driver for every active batch that has none."""
        for batch_id, _status in await self.store.active_batch_ids():
            task = self._tasks.get(batch_id)
            if task is None or task.done():
                self._tasks[batch_id] = asyncio.create_task(self._drive_logged(batch_id))

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _drive_logged(self, batch_id: str) -> None:
        try:
            await self.drive(batch_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch %s: driver failed; retrying at the next poll", batch_id)

    async def drive(self, batch_id: str) -> None:
        batch = await self.store.get_batch(batch_id)
        if batch is None:
            return
        if batch["status"] == "validating":
            batch = await self._validate(batch)
        if batch["status"] == "in_progress":
            await self._run_requests(batch)
            batch = await self.store.get_batch(batch_id) or batch
            if batch["status"] == "in_progress":
                if time.time() >= batch["expires_at"]:
                    await self._expire(batch)
                    batch = await self.store.get_batch(batch_id) or batch
                elif not await self.store.pending_requests(batch_id):
                    batch = await self._transition(batch, "in_progress", "finalizing")
        if batch["status"] == "finalizing":
            await self._finalize(batch, "expired" if batch.get("expired_at") else "completed")
        elif batch["status"] == "cancelling":
            await self._finalize(batch, "cancelled")

    async def _transition(self, batch: dict[str, Any], expect: str, status: str, **stamps: Any) -> dict[str, Any]:
        """Move to ``status`` unless someone (a cancel) changed the batch meanwhile; returns the stored batch."""
        updated = {**batch, "status": status, f"{status}_at": int(time.time()), **stamps}
        if await self.store.save_batch(updated, expect_status=expect):
            return updated
        return await self.store.get_batch(batch["id"]) or batch

    async def _validate(self, batch: dict[str, Any]) -> dict[str, Any]:
        try:
            data = await self.files.get(batch["input_file_id"])
        except FileNotFoundError:
            data = None
        if data is None:
            errors = [{"code": "file_not_found", "message": f"input file {batch['input_file_id']} not found",
                       "param": "input_file_id", "line": None}]
            requests = []
        else:
            requests, problems = await asyncio.to_thread(parse_batch_file, data, batch["endpoint"], self.max_requests)
            errors = [p.as_openai() for p in problems]
        if errors:
            return await self._transition(batch, "validating", "failed", errors={"object": "list", "data": errors})
        await self.store.add_requests(batch["id"], [
            (i, r.custom_id, r.url, orjson.dumps(r.body).decode()) for i, r in enumerate(requests)])
        counts = {"total": len(requests), "completed": 0, "failed": 0}
        return await self._transition(batch, "validating", "in_progress", request_counts=counts)

    async def _run_requests(self, batch: dict[str, Any]) -> None:
        """Send every pending request; return when all are done, the window closes or the batch is cancelled."""
        pending = iter(await self.store.pending_requests(batch["id"]))
        deadline = float(batch["expires_at"])
        tenant = await self.store.batch_tenant(batch["id"]) or None

        async def lane() -> None:
            for idx, custom_id, url, body in pending:
                try:
                    outcome = await self.sender.send(url, orjson.loads(body), deadline=deadline, fairness_id=tenant)
                except DeadlineReached:
                    return
                line = result_line(custom_id, outcome.status_code, outcome.body, outcome.request_id)
                if await self.store.record_result(batch["id"], idx, line, not 200 <= outcome.status_code < 300):
                    self.results_recorded += 1

        lanes = asyncio.gather(*(lane() for _ in range(self.sender.config.max_concurrency)))
        watcher = asyncio.create_task(self._watch(batch["id"], deadline))
        try:
            await asyncio.wait([watcher, lanes], return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            lanes.cancel()
            await asyncio.gather(watcher, lanes, return_exceptions=True)

    async def _watch(self, batch_id: str, deadline: float) -> None:
        """Return when the batch stops being in_progress (cancel) or its window closes."""
        while time.time() < deadline:
            await asyncio.sleep(self.poll_interval_s)
            batch = await self.store.get_batch(batch_id)
            if batch is None or batch["status"] != "in_progress":
                return

    async def _expire(self, batch: dict[str, Any]) -> None:
        for idx, custom_id, _url, _body in await self.store.pending_requests(batch["id"]):
            line = error_line(custom_id, "batch_expired",
                              "This request could not be executed before the completion window expired.")
            await self.store.record_result(batch["id"], idx, line, True)
        await self._transition(batch, "in_progress", "finalizing", expired_at=int(time.time()))

    async def _finalize(self, batch: dict[str, Any], final: str) -> None:
        """Write output and error files (ids derived from the batch: a rerun overwrites, never duplicates)."""
        suffix = batch["id"].removeprefix("batch_")
        stamps: dict[str, Any] = {"request_counts": await self.store.counts(batch["id"])}
        tenant = await self.store.batch_tenant(batch["id"])
        for is_error, key, name in ((False, "output_file_id", "output"), (True, "error_file_id", "errors")):
            lines = await self.store.results(batch["id"], is_error)
            if not lines:
                continue
            file_id = f"file-{suffix}-{name}"
            data = ("\n".join(lines) + "\n").encode()
            await self.files.put(file_id, data)
            await self.store.add_file({"id": file_id, "bytes": len(data), "created_at": int(time.time()),
                                       "filename": f"{batch['id']}_{name}.jsonl", "purpose": "batch_output"}, tenant)
            stamps[key] = file_id
        if final == "expired":
            stamps["expired_at"] = batch.get("expired_at") or int(time.time())
            updated = {**batch, "status": "expired", **stamps}
            await self.store.save_batch(updated, expect_status=batch["status"])
        else:
            await self._transition(batch, batch["status"], final, **stamps)
        log.info("batch %s %s: %s", batch["id"], final, stamps["request_counts"])
