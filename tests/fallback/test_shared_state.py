"""The team-mode shared state's URL handling (addons/fallback/shared_state.py): what reaches logs and
/health never carries a password, and a URL redis-py cannot use is refused at once. Its behaviour
against a real redis-server: tests/gateway/test_team.py."""

from __future__ import annotations

import pytest

from addons.config.server_urls import without_secrets
from addons.fallback.shared_state import SharedState


@pytest.mark.parametrize("url,shown", [
    ("redis://:secret@h:6379/0", "redis://***@h:6379/0"),
    ("rediss://user:secret@[::1]:6380/2", "rediss://***@[::1]:6380/2"),
    ("redis://h:6379/0?password=secret", "redis://h:6379/0"),
    ("unix:///run/redis.sock?password=secret", "unix:///run/redis.sock"),
    ("redis:/:secret@h", "(not a URL)"),
])
def test_no_password_is_shown(url, shown):
    assert without_secrets(url) == shown and "secret" not in without_secrets(url)


@pytest.mark.parametrize("url", ["redis://h:port/0", "redis://h:99999/0"])
def test_a_url_redis_py_cannot_use_is_refused_before_any_request(url):
    with pytest.raises(ValueError):
        SharedState(url)
