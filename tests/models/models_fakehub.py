"""A local stand-in for the Hugging Face hub, speaking the endpoints huggingface_hub uses.

- ``GET /api/models/ORG/NAME/revision/REV``: model info (``id``, ``sha``, ``siblings``)
- ``GET /api/models/ORG/NAME/tree/REV?recursive=True``: files with git ``oid``, ``size``, ``lfs``
- ``HEAD|GET /ORG/NAME/resolve/REV/PATH``: small files served directly (``ETag`` = git blob id,
  ``X-Repo-Commit``, ``Content-Length``); LFS files answered with a 302 to a "CDN" on another host
  name (``localhost``) carrying ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``, like the hub
- ``GET /cdn/SHA256``: the LFS content, honouring ``Range`` (206 + ``Content-Range``); it refuses
  requests that carry the hub token, which must not leave the hub
Errors use the hub's ``X-Error-Code`` values (RepoNotFound, RevisionNotFound, EntryNotFound).
Faults for tests: ``stall_after[path] = n`` sends n bytes then hangs; ``corrupt`` flips bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_THRESHOLD = 1024  # files larger than this are "LFS" files, as .gitattributes would make them


def git_oid(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    refs: dict[str, str] = field(default_factory=dict)
    private: bool = False

    def lfs(self, path: str) -> bool:
        return len(self.files[path]) > LFS_THRESHOLD

    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.files[path]).hexdigest()


class FakeHub:
    """Run with ``with FakeHub() as hub:``; ``hub.endpoint`` goes into ``HF_ENDPOINT``."""

    def __init__(self, token: str = "hf_test_token"):
        self.token = token
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[dict] = []
        self.stall_after: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.bytes_sent: dict[str, int] = {}
        self.release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def add(self, repo_id: str, files: dict[str, bytes], **kwargs) -> FakeRepo:
        repo = FakeRepo(files=files, **kwargs)
        repo.refs.setdefault("main", repo.commit)
        self.repos[repo_id] = repo
        return repo

    def file_gets(self, path: str) -> list[dict]:
        """GET requests that transferred ``path`` (directly or via the CDN)."""
        return [r for r in self.requests if r["method"] == "GET" and r.get("file") == path]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
            headers = {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}
            if commit:
                headers["X-Repo-Commit"] = commit
            self._send(status, headers, json.dumps({"error": message}).encode())

        def _repo(self, repo_id: str) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            authorized = self.headers.get("Authorization") == f"Bearer {hub.token}"
            if repo is None or (repo.private and not authorized):
                self._error(401, "RepoNotFound", "Repository not found")
                return None
            return repo

        def _commit(self, repo: FakeRepo, rev: str) -> str | None:
            commit = repo.refs.get(rev) or (rev if rev == repo.commit else None)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return commit

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            record = {"method": self.command, "path": path, "range": self.headers.get("Range"),
                      "authorization": self.headers.get("Authorization")}
            hub.requests.append(record)
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/(.+)", path):
                if (repo := self._repo(m[1])) and (commit := self._commit(repo, m[2])):
                    info = {"id": m[1], "sha": commit, "private": repo.private,
                            "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
                    self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode())
            elif m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path):
                if (repo := self._repo(m[1])) and (commit := self._commit(repo, m[2])):
                    self._send(200, {"Content-Type": "application/json"}, json.dumps(_tree(repo)).encode())
            elif m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                if (repo := self._repo(m[1])) and (commit := self._commit(repo, m[2])):
                    self._resolve(repo, commit, m[3], record)
            elif m := re.fullmatch(r"/cdn/([0-9a-f]{64})", path):
                self._cdn(m[1], record)
            else:
                self._error(404, "NotFound", f"no route {path}")

        def _resolve(self, repo: FakeRepo, commit: str, file: str, record: dict) -> None:
            if file not in repo.files:
                self._error(404, "EntryNotFound", f"{file} does not exist", commit)
                return
            data = repo.files[file]
            if repo.lfs(file):
                sha = repo.sha256(file)
                self._send(302, {"Location": f"http://localhost:{hub.port}/cdn/{sha}", "X-Repo-Commit": commit,
                                 "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)),
                                 "ETag": f'"{git_oid(data)}"'}, b"")
                return
            record["file"] = file
            self._content(file, data, {"X-Repo-Commit": commit, "ETag": f'"{git_oid(data)}"'})

        def _cdn(self, sha: str, record: dict) -> None:
            if self.headers.get("Authorization"):
                self._error(400, "BadRequest", "the CDN must not receive the hub token")
                return
            for repo in hub.repos.values():
                for file, data in repo.files.items():
                    if repo.sha256(file) == sha:
                        record["file"] = file
                        self._content(file, data, {"ETag": f'"{sha}"'})
                        return
            self._error(404, "NotFound", "no such object")

        def _content(self, file: str, data: bytes, headers: dict[str, str]) -> None:
            if file in hub.corrupt:
                data = bytes(b ^ 0xFF for b in data)
            start, status = 0, 200
            if (rng := self.headers.get("Range")) and (m := re.fullmatch(r"bytes=(\d+)-", rng)):
                start, status = int(m[1]), 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            headers.update({"Content-Length": str(len(body)), "Accept-Ranges": "bytes",
                            "Content-Type": "application/octet-stream"})
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            limit = hub.stall_after.get(file)
            if limit is not None and limit < len(body):
                self.wfile.write(body[:limit])
                self.wfile.flush()
                hub.bytes_sent[file] = hub.bytes_sent.get(file, 0) + limit
                hub.release.wait()  # hang like a dead network until the test ends
                self.close_connection = True
                return
            self.wfile.write(body)
            hub.bytes_sent[file] = hub.bytes_sent.get(file, 0) + len(body)

    return Handler


def _tree(repo: FakeRepo) -> list[dict]:
    folders = sorted({"/".join(p.split("/")[:i]) for p in repo.files for i in range(1, p.count("/") + 1)})
    entries = [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
               for f in folders]
    for path in sorted(repo.files):
        data = repo.files[path]
        entry = {"type": "file", "oid": git_oid(data), "size": len(data), "path": path}
        if repo.lfs(path):
            entry["lfs"] = {"oid": repo.sha256(path), "size": len(data), "pointerSize": 134}
        entries.append(entry)
    return entries
