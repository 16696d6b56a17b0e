"""One real platform for the gateway tests of this package: TLS + API keys, simulator replicas."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from platform_runner import Platform, start_platform

from inferplane.auth.keys import create_key

MODEL = "SmolLM2-135M-Instruct"
#: Largest body the gateway hands to ext_authz in these tests (small, to test the 413).
MAX_BODY = 64 * 1024


@dataclass
class SecurePlatform:
    platform: Platform
    ca_file: Path
    keys_file: Path
    keys: dict[str, str]

    @property
    def base_url(self) -> str:
        return self.platform.base_url


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost that is its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "inferplane test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


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
