"""The committed configuration reference matches the pydantic models it is generated from."""

from pathlib import Path

from inferplane.configref import render_reference


def test_configuration_reference_is_current() -> None:
    committed = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    assert committed == render_reference(), "run: python -m inferplane.configref > docs/configuration.md"
