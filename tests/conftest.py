import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import PROVIDER_HOSTS, FakeProcess, Gateway  # noqa: E402
from pki import make_test_pki  # noqa: E402


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return make_test_pki(tmp_path_factory.mktemp("pki"), [*PROVIDER_HOSTS, "tunnelled.test"])


@pytest.fixture(scope="session")
def fake(tmp_path_factory, pki):
    process = FakeProcess(tmp_path_factory.mktemp("fake"), pki)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, fake, pki):
    """One shared gateway for tests that only send requests through it."""
    process = Gateway(tmp_path_factory.mktemp("gateway"), fake.port, pki.ca_cert)
    yield process
    process.stop()
