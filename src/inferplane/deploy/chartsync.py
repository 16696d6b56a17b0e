"""Write the Helm chart's generated files from their single sources in this package.

- ``values.yaml`` and ``values.schema.json``: from the ``Values`` model (Helm validates values with the schema);
- ``files/crds/``: the CRDs of ``crds/``;
- ``files/envoy-bootstrap.json``: ``build_bootstrap`` output with placeholders the chart fills in.

Run ``python -m inferplane.deploy.chartsync`` after changing any of them; a test checks the chart is current.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from inferplane.deploy.crds import crd_files
from inferplane.deploy.envoy import gateway_config
from inferplane.gateway.bootstrap import build_bootstrap
from inferplane.deploy.values import Values, defaults

CHART_DIR = Path(__file__).resolve().parents[3] / "deploy" / "helm" / "inferplane"

#: Placeholders in files/envoy-bootstrap.json, replaced by templates/gateway-envoy.yaml.
PICKER_HOST_PLACEHOLDER = "__PICKER_HOST__"
LISTENER_PORT_PLACEHOLDER = 65431
FAIL_CLOSE_TEXT = '"failure_mode_allow": false'
#: Under FailOpen the request body is buffered (Envoy cannot fail open after streaming it to the picker).
STREAMED_BODY_TEXT = '"request_body_mode": "FULL_DUPLEX_STREAMED"'

VALUES_HEADER = """\
# Default values of the inferplane chart. GENERATED from inferplane.deploy.values.Values by
# `python -m inferplane.deploy.chartsync`: edit the model, not this file. Every key is described in
# docs/kubernetes.md; values.schema.json (generated too) makes Helm refuse unknown keys and bad types.
"""


def bootstrap_template() -> str:
    """The standalone Envoy bootstrap with placeholders for the picker host, listener port, failure mode."""
    config = gateway_config(LISTENER_PORT_PLACEHOLDER, PICKER_HOST_PLACEHOLDER, "FailClose")
    text = json.dumps(build_bootstrap(config), indent=1, sort_keys=True)
    placeholders = (FAIL_CLOSE_TEXT, STREAMED_BODY_TEXT, str(LISTENER_PORT_PLACEHOLDER))
    if any(text.count(placeholder) != 1 for placeholder in placeholders):
        raise RuntimeError("bootstrap placeholders are not unique; the chart could not fill them in")
    return text + "\n"


def _commented(model: type[BaseModel], data: dict[str, Any], indent: int) -> list[str]:
    """YAML lines of ``data`` (a dump of ``model``), each key preceded by its field's description."""
    lines: list[str] = []
    pad = " " * indent
    for name, field in model.model_fields.items():
        key = field.alias or name
        description = field.description or (field.annotation.__doc__ if _is_section(field.annotation) else None)
        if description:
            lines += [f"{pad}# {line.strip()}" if line.strip() else f"{pad}#" for line in description.strip().splitlines()]
        value = data[key]
        if _is_section(field.annotation):
            lines.append(f"{pad}{key}:")
            lines += _commented(field.annotation, value, indent + 2)
        else:
            dumped = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False).rstrip("\n")
            lines += [pad + line for line in dumped.splitlines()]
    return lines


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def values_yaml() -> str:
    """The defaults, commented with each key's description."""
    return VALUES_HEADER + "\n".join(_commented(Values, defaults(), 0)) + "\n"


def values_schema() -> str:
    schema = Values.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def generated_files() -> dict[str, str]:
    """Chart-relative path → content, for every generated file."""
    files = {
        "values.yaml": values_yaml(),
        "values.schema.json": values_schema(),
        "files/envoy-bootstrap.json": bootstrap_template(),
    }
    for path in crd_files():
        files[f"files/crds/{path.name}"] = path.read_text()
    return files


def stale_files(chart_dir: Path = CHART_DIR) -> list[str]:
    """Generated files missing or out of date in ``chart_dir``, and CRD files no longer generated."""
    expected = generated_files()
    stale = [name for name, text in expected.items() if not (chart_dir / name).is_file() or (chart_dir / name).read_text() != text]
    stale += [
        f"files/crds/{path.name}"
        for path in sorted((chart_dir / "files" / "crds").glob("*.yaml"))
        if f"files/crds/{path.name}" not in expected
    ]
    return stale


def sync(chart_dir: Path = CHART_DIR) -> list[str]:
    """Rewrite the generated files; returns what changed."""
    changed = stale_files(chart_dir)
    for path in (chart_dir / "files" / "crds").glob("*.yaml"):
        path.unlink()
    for name, text in generated_files().items():
        target = chart_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return changed


if __name__ == "__main__":
    for name in sync():
        print(f"updated {name}", file=sys.stderr)
