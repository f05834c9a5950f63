"""Session fixtures shared by every test folder (helpers live in support.py, importable as ``support``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import GOLDEN, recipe_model


@pytest.fixture(scope="session")
def golden() -> Path:
    return GOLDEN


@pytest.fixture(scope="session")
def tiny_model():
    return recipe_model("tiny")
