"""Shared fixtures: the tiny model/tokenizer and small task data (built in memory, nothing downloaded)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from engine.models import build_tiny_tokenizer

    return build_tiny_tokenizer()
