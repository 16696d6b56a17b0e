"""``inferplane batch …`` (Batch API server and client) and ``inferplane async …`` (queue processor)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8090/v1"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``batch`` and ``async``."""
    batch = subparsers.add_parser("batch", help="OpenAI Batch API: serve it, submit and follow batches",
                                  description="Run the OpenAI-compatible /v1/files + /v1/batches server, or use it.")
    sub = batch.add_subparsers(dest="batch_command", metavar="ACTION")
    serve = sub.add_parser("serve", help="run the Batch API server and its dispatcher")
    serve.add_argument("--config", metavar="FILE", help="YAML file; settings under its `batch` section")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--database", help="sqlite:///PATH (default) or postgresql://…")
    serve.add_argument("--files-url", help="where file contents go: a directory, gs://… or s3://…")
    serve.add_argument("--gateway-url", help="gateway base URL requests are sent to (default http://127.0.0.1:8080)")
    serve.add_argument("--objective", help="objective header value (default 'batch'; configure it sheddable)")
    serve.add_argument("--max-concurrency", type=int, help="requests in flight, all batches together")
    serve.add_argument("--no-worker", action="store_true", help="serve the API only; dispatch elsewhere")
    serve.set_defaults(func=_serve)

    def client_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=os.environ.get("INFERPLANE_BATCH_URL", DEFAULT_URL),
                       help=f"Batch API base URL (env INFERPLANE_BATCH_URL, default {DEFAULT_URL})")

    submit = sub.add_parser("submit", help="upload a JSONL file and create a batch")
    submit.add_argument("file", help="JSONL: OpenAI batch lines {custom_id, method, url, body}, or bare request bodies")
    submit.add_argument("--model", help="set body.model on every request")
    submit.add_argument("--endpoint", default="/v1/chat/completions",
                        choices=["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
    submit.add_argument("--window", default="24h", help="completion window (24h, 90m, …)")
    submit.add_argument("--wait", action="store_true", help="follow the batch with a progress bar until it ends")
    client_args(submit)
    submit.set_defaults(func=_submit)
    for name, helptext in (("status", "show a batch"), ("cancel", "cancel a batch")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("batch_id")
        client_args(p)
        p.set_defaults(func=_status if name == "status" else _cancel)
    listing = sub.add_parser("list", help="list batches, newest first")
    listing.add_argument("--limit", type=int, default=20)
    client_args(listing)
    listing.set_defaults(func=_list)
    results = sub.add_parser("results", help="print (or save) a batch's output or error file")
    results.add_argument("batch_id")
    results.add_argument("--errors", action="store_true", help="the error file instead of the output file")
    results.add_argument("-o", "--output", help="write to this file instead of stdout")
    client_args(results)
    results.set_defaults(func=_results)
    batch.set_defaults(func=lambda args: (batch.print_help(), 2)[1])

    from inferplane.jobs.async_cli import add_async_parser

    add_async_parser(subparsers)


def _serve(args: argparse.Namespace) -> int:
    from inferplane.configfile import read_yaml, validate_model
    from inferplane.jobs.config import BatchConfig
    from inferplane.jobs.server import serve

    raw: dict[str, Any] = {}
    if args.config:
        section = read_yaml(args.config).get("batch") or {}
        raw = dict(section) if isinstance(section, dict) else {}
    for key in ("host", "port", "database", "files_url"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    dispatch = dict(raw.get("dispatch") or {})
    for arg, key in (("gateway_url", "gateway_url"), ("objective", "objective"), ("max_concurrency", "max_concurrency")):
        if getattr(args, arg) is not None:
            dispatch[key] = getattr(args, arg)
    raw["dispatch"] = dispatch
    if args.no_worker:
        raw["worker"] = False
    return serve(validate_model(BatchConfig, raw, args.config or "the command line"))


def _fail(message: str, code: int = 1) -> int:
    print(f"inferplane batch: {message}", file=sys.stderr)
    return code


def _client(args: argparse.Namespace) -> Any:
    from inferplane.jobs.client import BatchClient

    return BatchClient(args.url)


def _prepare(path: str, model: str | None, endpoint: str) -> tuple[bytes | None, str | None]:
    """The file as OpenAI batch JSONL (bare bodies wrapped, ``--model`` applied), or an error message."""
    import orjson

    from inferplane.jobs.jsonl import parse_batch_file

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read {path}: {exc}"
    out: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            out.append(b"")
            continue
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return None, f"{path}: line {number}: invalid JSON: {exc}"
        if isinstance(item, dict) and "body" not in item:
            item = {"custom_id": f"request-{number}", "method": "POST", "url": endpoint, "body": item}
        if model and isinstance(item, dict) and isinstance(item.get("body"), dict):
            item["body"]["model"] = model
        out.append(orjson.dumps(item))
    data = b"\n".join(out) + b"\n"
    _, problems = parse_batch_file(data, endpoint)
    if problems:
        return None, f"{path}: " + "; ".join(p.message if p.message.startswith("line") else f"line {p.line}: {p.message}"
                                             for p in problems)
    return data, None


def _submit(args: argparse.Namespace) -> int:
    from inferplane.jobs.batches import parse_window
    from inferplane.jobs.client import APIError

    if parse_window(args.window) is None:
        return _fail(f"--window {args.window!r}: expected e.g. 24h, 90m or 30s", 2)
    data, problem = _prepare(args.file, args.model, args.endpoint)
    if data is None:
        return _fail(problem or "invalid input", 2)
    client = _client(args)
    try:
        uploaded = client.upload(Path(args.file).name, data)
        batch = client.create(uploaded["id"], args.endpoint, args.window, None)
    except APIError as exc:
        return _fail(str(exc))
    print(batch["id"])
    if not args.wait:
        return 0
    return _follow(client, batch["id"])


def _follow(client: Any, batch_id: str) -> int:
    from tqdm import tqdm

    from inferplane.jobs.batches import TERMINAL
    from inferplane.jobs.client import APIError

    bar = tqdm(total=0, unit="req", desc=batch_id[:18], file=sys.stderr)
    try:
        while True:
            try:
                batch = client.get(batch_id)
            except APIError as exc:
                bar.write(f"(retrying) {exc}")
                time.sleep(2)
                continue
            counts = batch["request_counts"]
            bar.total = counts["total"]
            bar.n = counts["completed"] + counts["failed"]
            bar.set_postfix(status=batch["status"], failed=counts["failed"])
            bar.refresh()
            if batch["status"] in TERMINAL:
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        bar.close()
        print(f"stopped following; the batch goes on: inferplane batch status {batch_id}", file=sys.stderr)
        return 130
    bar.close()
    _print_batch(batch)
    return 0 if batch["status"] == "completed" else 1


def _print_batch(batch: dict[str, Any]) -> None:
    counts = batch["request_counts"]
    print(f"{batch['id']}  {batch['status']:<11} total {counts['total']}  completed {counts['completed']}  "
          f"failed {counts['failed']}  output {batch.get('output_file_id') or '-'}  errors {batch.get('error_file_id') or '-'}")
    errors = (batch.get("errors") or {}).get("data") or []
    for error in errors:
        print(f"  line {error.get('line')}: {error.get('message')}")


def _status(args: argparse.Namespace) -> int:
    from inferplane.jobs.client import APIError

    try:
        _print_batch(_client(args).get(args.batch_id))
    except APIError as exc:
        return _fail(str(exc))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from inferplane.jobs.client import APIError

    try:
        _print_batch(_client(args).cancel(args.batch_id))
    except APIError as exc:
        return _fail(str(exc))
    return 0


def _list(args: argparse.Namespace) -> int:
    from inferplane.jobs.client import APIError

    try:
        for batch in _client(args).list(max(1, min(100, args.limit))):
            _print_batch(batch)
    except APIError as exc:
        return _fail(str(exc))
    return 0


def _results(args: argparse.Namespace) -> int:
    from inferplane.jobs.client import APIError

    client = _client(args)
    try:
        batch = client.get(args.batch_id)
        file_id = batch.get("error_file_id" if args.errors else "output_file_id")
        if not file_id:
            return _fail(f"batch {args.batch_id} ({batch['status']}) has no {'error' if args.errors else 'output'} file yet")
        data = client.content(file_id)
    except APIError as exc:
        return _fail(str(exc))
    if args.output:
        Path(args.output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    return 0
