"""The Batch API scopes files and batches by the tenant header the gateway sets."""

from __future__ import annotations

import io
import json
from pathlib import Path

from starlette.testclient import TestClient

from inferplane.jobs.config import BatchConfig
from inferplane.jobs.server import build_server_app

TENANT = "x-llm-d-inference-fairness-id"
LINE = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}).encode()


def test_tenants_see_only_their_own_files_and_batches(tmp_path: Path) -> None:
    config = BatchConfig(database=f"sqlite:///{tmp_path / 'b.db'}", files_url=str(tmp_path / "files"), worker=False)
    with TestClient(build_server_app(config)) as client:
        acme, globex = {TENANT: "acme"}, {TENANT: "globex"}
        upload = client.post("/v1/files", headers=acme, data={"purpose": "batch"},
                             files={"file": ("in.jsonl", io.BytesIO(LINE), "application/jsonl")})
        assert upload.status_code == 200
        file_id = upload.json()["id"]
        batch = client.post("/v1/batches", headers=acme,
                            json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}).json()

        # the owner sees them
        assert [f["id"] for f in client.get("/v1/files", headers=acme).json()["data"]] == [file_id]
        assert client.get(f"/v1/files/{file_id}/content", headers=acme).content == LINE
        assert [b["id"] for b in client.get("/v1/batches", headers=acme).json()["data"]] == [batch["id"]]

        # another tenant gets 404 in OpenAI error format and empty lists
        for method, path in (("GET", f"/v1/files/{file_id}"), ("GET", f"/v1/files/{file_id}/content"),
                             ("DELETE", f"/v1/files/{file_id}"), ("GET", f"/v1/batches/{batch['id']}"),
                             ("POST", f"/v1/batches/{batch['id']}/cancel")):
            reply = client.request(method, path, headers=globex)
            assert reply.status_code == 404, (method, path)
            assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
        assert client.get("/v1/files", headers=globex).json()["data"] == []
        assert client.get("/v1/batches", headers=globex).json()["data"] == []
        assert client.get("/v1/batches", headers=globex, params={"after": batch["id"]}).json()["data"] == []
        stolen = client.post("/v1/batches", headers=globex,
                             json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"})
        assert stolen.status_code == 400 and stolen.json()["error"]["param"] == "input_file_id"
        # without a tenant (no keys configured) callers share the default tenant, not acme's objects
        assert client.get("/v1/files").json()["data"] == []
        # the owner's file is still there
        assert client.get(f"/v1/files/{file_id}", headers=acme).status_code == 200


def test_an_older_database_gains_the_tenant_columns(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE files (id TEXT PRIMARY KEY, bytes BIGINT NOT NULL, created_at BIGINT NOT NULL, "
                 "filename TEXT NOT NULL, purpose TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO files VALUES ('file-old', 1, 1, 'a.jsonl', 'batch', 0)")
    conn.commit()
    conn.close()
    config = BatchConfig(database=f"sqlite:///{db}", files_url=str(tmp_path / "files"), worker=False)
    with TestClient(build_server_app(config)) as client:
        assert [f["id"] for f in client.get("/v1/files").json()["data"]] == ["file-old"]


def test_unknown_paths_and_methods_answer_in_openai_format(tmp_path: Path) -> None:
    config = BatchConfig(database=f"sqlite:///{tmp_path / 'b.db'}", files_url=str(tmp_path / "files"), worker=False)
    with TestClient(build_server_app(config)) as client:
        for method, path, status in (("GET", "/v1/files/", 404), ("GET", "/v1/files/a/b/content", 404),
                                     ("PUT", "/v1/batches", 405), ("GET", "/v1/nothing", 404)):
            reply = client.request(method, path, follow_redirects=False)
            assert reply.status_code == status, (method, path, reply.status_code)
            assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
