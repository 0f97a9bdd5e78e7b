"""The CA in Clutch's own folder (certs/ of a checkout): created once, private, with a combined bundle beside it."""

from __future__ import annotations

import stat

from mitmproxy.test import taddons

from addons.certs import Certs, ca_files, prepare, system_roots
from addons.config.paths import ROOT, places


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_prepare_creates_a_private_ca_and_bundle(tmp_path):
    folder = tmp_path / "certs"
    files = prepare(folder)
    assert mode(folder) == 0o700
    assert mode(files.ca_key) == 0o600
    assert mode(files.bundle) == 0o644
    ca = files.ca_cert.read_bytes()
    assert b"PRIVATE KEY" not in ca and b"PRIVATE KEY" in files.ca_key.read_bytes()
    bundle = files.bundle.read_bytes()
    assert bundle.endswith(ca)
    assert bundle.startswith(system_roots().read_bytes().rstrip(b"\n"))
    assert b"PRIVATE KEY" not in bundle


def test_prepare_keeps_an_existing_ca(tmp_path):
    first = prepare(tmp_path / "certs").ca_cert.read_bytes()
    again = prepare(tmp_path / "certs")
    assert again.ca_cert.read_bytes() == first


def test_bundle_is_rewritten_when_stale(tmp_path):
    files = prepare(tmp_path / "certs")
    files.bundle.write_bytes(b"stale")
    assert prepare(tmp_path / "certs").bundle.read_bytes().endswith(files.ca_cert.read_bytes())


def test_default_confdir_moves_to_clutchs_own_folder(tmp_path):
    certs = Certs()
    with taddons.context(certs) as tctx:
        tctx.configure(certs, confdir=str(tmp_path / "elsewhere"))
        assert certs.files == ca_files((tmp_path / "elsewhere").resolve())
        tctx.options.update(confdir="~/.mitmproxy")
        assert tctx.options.confdir == str(places().ca) == str(ROOT / "certs")  # a checkout's


def test_gateway_never_writes_the_key_into_its_log(gateway):
    key_lines = [line for line in gateway.ca_cert.with_name("mitmproxy-ca.pem").read_text().splitlines()
                 if line and not line.startswith("-----")]
    log = gateway.output()
    assert not any(line in log for line in key_lines[:5])
