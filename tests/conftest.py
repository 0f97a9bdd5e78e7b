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


@pytest.fixture
def xx_home(tmp_path, fake, pki):
    """A temporary HOME whose xx config starts gateways on a free port against the fake provider;
    (home, config). A gateway xx started there is stopped by its PID afterwards."""
    from xx_rig import stop_gateway, write_config
    home = tmp_path / "home"
    home.mkdir()
    config = write_config(home, fake.port, pki.ca_cert)
    yield home, config
    stop_gateway(home)
