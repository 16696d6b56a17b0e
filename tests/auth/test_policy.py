"""The authorization decision and its ext_authz CheckResponse."""

from __future__ import annotations

import json
from pathlib import Path

from inferplane.auth.errors import Denial
from inferplane.auth.keys import KeyStore, create_key
from inferplane.auth.policy import TENANT_HEADERS, Allowed, Policy
from inferplane.auth.service import check_response

INTERNAL = "ipk_internal_secret"


def make_policy(tmp_path: Path) -> tuple[Policy, str, str]:
    keys_file = tmp_path / "keys.yaml"
    _, acme = create_key(keys_file, "acme", ["m1"], rpm=2)
    _, globex = create_key(keys_file, "globex")
    return Policy(KeyStore(keys_file), internal_key=INTERNAL), acme, globex


def chat(model: str) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()


def test_missing_and_bad_keys_are_401(tmp_path: Path) -> None:
    policy, _, _ = make_policy(tmp_path)
    for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "Basic abc"}):
        decision = policy.decide(headers, chat("m1"))
        assert isinstance(decision, Denial) and decision.status == 401
        assert set(json.loads(decision.body())["error"]) == {"message", "type", "param", "code"}


def test_model_not_allowed_is_403_and_tenant_headers_are_set(tmp_path: Path) -> None:
    policy, acme, globex = make_policy(tmp_path)
    denied = policy.decide({"authorization": f"Bearer {acme}"}, chat("m2"))
    assert isinstance(denied, Denial) and denied.status == 403 and json.loads(denied.body())["error"]["param"] == "model"
    spoof = {"authorization": f"Bearer {globex}", TENANT_HEADERS[0]: "acme"}
    allowed = policy.decide(spoof, chat("anything"))
    assert isinstance(allowed, Allowed) and allowed.set_headers == {h: "globex" for h in TENANT_HEADERS}
    assert "authorization" in allowed.remove_headers
    assert isinstance(policy.decide({"x-api-key": acme}, b""), Allowed)  # GET /v1/models: no body, no model


def test_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    policy, acme, _ = make_policy(tmp_path)
    headers = {"authorization": f"Bearer {acme}"}
    assert isinstance(policy.decide(headers, chat("m1")), Allowed)
    assert isinstance(policy.decide(headers, chat("m1")), Allowed)
    limited = policy.decide(headers, chat("m1"))
    assert isinstance(limited, Denial) and limited.status == 429 and int(limited.headers["retry-after"]) >= 1


def test_internal_key_acts_for_the_named_tenant_within_its_models(tmp_path: Path) -> None:
    policy, _, _ = make_policy(tmp_path)
    headers = {"authorization": f"Bearer {INTERNAL}", TENANT_HEADERS[0]: "acme"}
    assert isinstance(policy.decide(headers, chat("m1")), Allowed)
    denied = policy.decide(headers, chat("m2"))
    assert isinstance(denied, Denial) and denied.status == 403


def test_check_response_carries_status_headers_and_body(tmp_path: Path) -> None:
    policy, acme, _ = make_policy(tmp_path)
    denied = check_response(policy.decide({"authorization": f"Bearer {acme}"}, chat("m2")))
    assert denied.denied_response.status.code == 403
    assert {h.header.key: h.header.value for h in denied.denied_response.headers}["content-type"] == "application/json"
    assert json.loads(denied.denied_response.body)["error"]["code"] == "model_not_allowed"
    ok = check_response(policy.decide({"authorization": f"Bearer {acme}"}, chat("m1")))
    assert ok.status.code == 0 and {h.header.value for h in ok.ok_response.headers} == {"acme"}


def test_hostile_bodies_are_decided_without_errors(tmp_path: Path) -> None:
    policy, acme, _ = make_policy(tmp_path)
    headers = {"authorization": f"Bearer {acme}"}
    deep = b'{"model": "m1", "messages": ' + b"[" * 900 + b"]" * 900 + b"}"
    for body in (deep, b"\xff\xfe", b"[1,2]", b'{"model": 5}', b'{"model": "m1", "max_tokens": 1e400}', b"null"):
        assert isinstance(policy.decide(headers, body), (Allowed, Denial))
