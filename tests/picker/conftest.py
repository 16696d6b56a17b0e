"""Fixtures for the picker tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from picker_support import FakeModelServer, serve_fake_model_server


@pytest.fixture
async def model_server() -> AsyncIterator[FakeModelServer]:
    async with serve_fake_model_server() as state:
        yield state
