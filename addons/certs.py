"""Certs: Clutch's own CA in its own folder, and a combined trust bundle beside it.

mitmproxy keeps its CA in `confdir` (default ~/.mitmproxy); Clutch moves it to its own folder
(addons/config/paths.py: a checkout's certs/, never committed; installed, $XDG_DATA_HOME/clutch/ca),
folder 0700 and key 0600, unless a confdir was chosen explicitly. Agents whose CA variable replaces
the trust store (SSL_CERT_FILE, REQUESTS_CA_BUNDLE) get the bundle: system roots + Clutch CA, so hosts
Clutch does not intercept still verify with their real certificates.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import ssl
from pathlib import Path

from mitmproxy import ctx

from addons.config.paths import places

logger = logging.getLogger(__name__)

MITMPROXY_DEFAULT_CONFDIR = "~/.mitmproxy"
BUNDLE_NAME = "clutch-ca-bundle.pem"


@dataclasses.dataclass(frozen=True)
class CAFiles:
    folder: Path
    ca_cert: Path  # what clients trust (public)
    ca_key: Path  # the CA private key + certificate: the secret
    bundle: Path  # system roots + ca_cert


def ca_files(folder: Path) -> CAFiles:
    return CAFiles(folder, folder / "mitmproxy-ca-cert.pem", folder / "mitmproxy-ca.pem", folder / BUNDLE_NAME)


def system_roots() -> Path:
    """The system trust store if it has one, else certifi's."""
    candidates = [ssl.get_default_verify_paths().cafile, "/etc/ssl/certs/ca-certificates.crt",
                  "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    import certifi
    return Path(certifi.where())


def prepare(folder: Path, key_size: int = 2048) -> CAFiles:
    """Create the CA if missing, fix permissions, and (re)write the bundle if stale."""
    # imported here: `xx` imports this module for the CA paths alone, on every launch, and
    # mitmproxy.certs (cryptography, OpenSSL) is a third of its start-up
    from mitmproxy import certs
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    certs.CertStore.from_store(folder, "mitmproxy", key_size)
    files = ca_files(folder)
    for secret in (files.ca_key, folder / "mitmproxy-ca.p12"):
        if secret.exists():
            os.chmod(secret, 0o600)
    wanted = system_roots().read_bytes().rstrip(b"\n") + b"\n" + files.ca_cert.read_bytes()
    if not files.bundle.exists() or files.bundle.read_bytes() != wanted:
        temporary = files.bundle.with_suffix(".tmp")
        temporary.write_bytes(wanted)
        os.chmod(temporary, 0o644)
        temporary.replace(files.bundle)
    return files


class Certs:
    def __init__(self) -> None:
        self.files: CAFiles | None = None

    def configure(self, updated):
        if "confdir" not in updated:
            return
        if ctx.options.confdir == MITMPROXY_DEFAULT_CONFDIR:
            # re-enters configure with the new confdir; mitmproxy's TlsConfig then loads our CA
            ctx.options.confdir = str(places().ca)
            return
        folder = Path(os.path.expanduser(ctx.options.confdir)).resolve()
        self.files = prepare(folder, ctx.options.key_size)
        logger.info("CA certificate for agents: %s (bundle: %s)", self.files.ca_cert, self.files.bundle)
