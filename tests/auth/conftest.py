"""One real platform for the gateway tests of this package: TLS + API keys, simulator replicas."""

from __future__ import annotations

import pytest
from platform_runner import start_platform
from secure_support import MAX_BODY, MODEL, SecurePlatform, self_signed_cert

from inferplane.auth.keys import create_key


@pytest.fixture(scope="session")
def secure_platform(tmp_path_factory: pytest.TempPathFactory) -> SecurePlatform:
    tmp = tmp_path_factory.mktemp("secure")
    cert_file, key_file = self_signed_cert(tmp)
    keys_file = tmp / "keys.yaml"
    keys = {
        "acme": create_key(keys_file, "acme", [MODEL])[1],
        "globex": create_key(keys_file, "globex", ["some-other-model"])[1],
        "tiny": create_key(keys_file, "tiny", rpm=2)[1],
        "fuzz": create_key(keys_file, "fuzz")[1],
        "other": create_key(keys_file, "other")[1],
        "tokens": create_key(keys_file, "tokens", tpm=300)[1],
    }
    platform = start_platform(
        tmp, replicas=2, server={"engine": "sim", "sim": {"time_scale": 0.05}},
        gateway={"tls": {"cert_file": str(cert_file), "key_file": str(key_file)}},
        auth={"keys_file": str(keys_file), "max_body_bytes": MAX_BODY},
    )
    yield SecurePlatform(platform, cert_file, keys_file, keys)
    assert platform.stop() == 0, "\n".join(platform.lines[-40:])
