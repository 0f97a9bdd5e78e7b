"""The in-process addon tests: a temporary HOME, and the fake provider in the test's own event loop."""

import pytest
import pytest_asyncio
from fake_upstream import FakeUpstream


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Nothing of the user's: HOME and the state folder are temporary, no provider key is set."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "home" / ".local" / "state"))
    for name in ("OPENROUTER_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"


@pytest_asyncio.fixture
async def provider(pki):
    """tests/fake_upstream.py serving TLS on a loopback port, in this test's event loop."""
    fake = FakeUpstream()
    await fake.start(ssl_context=pki.server_ssl_context())
    try:
        yield fake
    finally:
        await fake.stop()
