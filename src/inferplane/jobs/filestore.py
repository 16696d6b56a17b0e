"""File contents in an object store through fsspec: a local directory, ``gs://…`` or ``s3://…``."""

from __future__ import annotations

import asyncio
import os

import fsspec
from fsspec.implementations.local import LocalFileSystem

from inferplane.configfile import ConfigError


class FileStore:
    """Bytes by file id under one root URL; a local write lands atomically (temp file + rename)."""

    def __init__(self, root_url: str) -> None:
        try:
            self.fs, root = fsspec.core.url_to_fs(root_url)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"files_url: cannot use {root_url!r}: {exc}") from None
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            os.makedirs(self.root, exist_ok=True)

    def _path(self, file_id: str) -> str:
        return f"{self.root}/{file_id}"

    def _put(self, file_id: str, data: bytes) -> None:
        path = self._path(file_id)
        if self.local:
            tmp = f"{path}.tmp"
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    async def put(self, file_id: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, file_id, data)

    async def get(self, file_id: str) -> bytes:
        return await asyncio.to_thread(self.fs.cat_file, self._path(file_id))

    async def delete(self, file_id: str) -> None:
        def rm() -> None:
            try:
                self.fs.rm_file(self._path(file_id))
            except FileNotFoundError:
                pass
        await asyncio.to_thread(rm)
