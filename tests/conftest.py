import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

import harness  # noqa: E402
from harness import PROVIDER_HOSTS, FakeProcess, Gateway  # noqa: E402
from pki import make_test_pki  # noqa: E402

# Fixtures that start processes: the fake provider, a real mitmdump, a HOME whose xx starts gateways,
# a redis-server, a PostgreSQL. A test that uses one (directly or through another fixture) is a
# `gateway` test.
PROCESS_FIXTURES = {"fake", "gateway", "xx_home", "redis", "postgres"}


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true",
                     help="the fast loop: only tests that start no gateway, fake provider or agent CLI "
                          "(not marked gateway or e2e); one that starts one anyway fails, naming it")


def pytest_configure(config):
    if config.getoption("fast"):
        harness.PROCESSES_ALLOWED = False


def pytest_collection_modifyitems(config, items):
    """Mark each test by what it needs: `e2e` under tests/e2e/ (real agent CLIs), `gateway` under
    tests/gateway/ (a real mitmdump) or when it uses a process fixture; --fast leaves both out."""
    for item in items:
        try:
            folder = Path(item.path).resolve().relative_to(TESTS).parts[0]
        except ValueError:
            folder = ""
        if folder == "e2e":
            item.add_marker(pytest.mark.e2e)
        if folder == "gateway" or PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.gateway)
    if config.getoption("fast"):
        slow = [item for item in items if item.get_closest_marker("gateway") or item.get_closest_marker("e2e")]
        if slow:
            kept = set(map(id, slow))
            items[:] = [item for item in items if id(item) not in kept]
            config.hook.pytest_deselected(items=slow)


@pytest.fixture(scope="session", autouse=True)
def no_user_config(tmp_path_factory):
    """No test reads the user's own Clutch folder (rules.yaml and keys.env are layered into every
    gateway, launch and check): XDG_CONFIG_HOME is an empty folder of the session for the tests and
    every process they start. A test that wants a user file sets its own HOME or XDG_CONFIG_HOME."""
    import os
    before = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("xdg-config"))
    yield
    if before is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = before


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


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    """A real redis-server of the module's own (redis_server.py), stopped by its PID after the module."""
    from redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL cluster of the module's own (postgres_server.py), stopped by its PID after it."""
    from postgres_server import PostgresServer

    server = PostgresServer()
    yield server
    server.close()
