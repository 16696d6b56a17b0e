"""Regenerate ``grpc_predict_v2_pb2*.py`` from the .proto (needs grpcio-tools; run from the repo root).

The generated modules are committed so that serving needs only grpcio and protobuf at run time:
``python src/inferplane/oip/proto/generate.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    from grpc_tools import protoc

    src = HERE.parents[2]  # .../src
    proto = HERE / "grpc_predict_v2.proto"
    code = protoc.main(["protoc", f"-I{src}", f"--python_out={src}", f"--pyi_out={src}", f"--grpc_python_out={src}", str(proto.relative_to(src))])
    if code == 0:
        private_pool(HERE / "grpc_predict_v2_pb2.py")
    return code


def private_pool(path: Path) -> None:
    """Register the messages in a private descriptor pool, not protobuf's default one.

    tritonclient registers the same ``inference.*`` names in the default pool; with a private pool
    both can be imported in one process (tests, and clients embedding the server).
    """
    text = path.read_text()
    marker = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
    if marker not in text:
        raise SystemExit(f"unexpected generated code in {path}")
    text = text.replace(marker, "_POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = _POOL.AddSerializedFile(")
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
