"""Throw-away X.509 PKI for tests (no mitmproxy imports).

``make_test_pki(directory, hosts)`` creates a test root CA ("Clutch Test Upstream
CA", valid 10 years) and one leaf certificate covering every name in ``hosts``
(DNS SANs) plus the IP SAN ``127.0.0.1``, signed by that CA.  All keys are EC
P-256 (fast to generate).  Files written into ``directory``:

* ``ca.pem``        - the CA certificate (give it to clients as their trust anchor)
* ``ca-key.pem``    - the CA private key (mode 0600; kept so the leaf can be
                      re-issued for new hosts under the *same* CA)
* ``leaf.pem``      - the leaf (server) certificate
* ``leaf-key.pem``  - the leaf private key (mode 0600)

The call is idempotent: when the files exist, parse, chain to ``ca.pem``, are
not about to expire and the leaf already covers every requested host, they are
reused untouched.  Files are written to a temporary name and renamed into place,
so concurrent callers never observe half-written PEM files.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import pathlib
import ssl
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_COMMON_NAME = "Clutch Test Upstream CA"
LEAF_IP = "127.0.0.1"
_VALIDITY = datetime.timedelta(days=3650)
# Reuse existing certificates only if they stay valid at least this long.
_MIN_REMAINING = datetime.timedelta(days=7)

__all__ = ["TestPKI", "make_test_pki", "CA_COMMON_NAME"]


@dataclasses.dataclass(frozen=True)
class TestPKI:
    """Paths of a test PKI produced by :func:`make_test_pki`."""

    __test__ = False  # not a pytest test class, despite the name

    ca_cert: pathlib.Path
    cert: pathlib.Path
    key: pathlib.Path

    def server_ssl_context(self) -> ssl.SSLContext:
        """TLS server context presenting the leaf certificate (ALPN: http/1.1)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(certfile=str(self.cert), keyfile=str(self.key))
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def client_ssl_context(self) -> ssl.SSLContext:
        """TLS client context that trusts only the test CA (hostname checking on)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        return ctx


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_atomic(path: pathlib.Path, data: bytes, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Clutch Tests"),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_leaf(
    hosts: list[str], ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    first = hosts[0] if hosts else LEAF_IP
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    sans.append(x509.IPAddress(ipaddress.ip_address(LEAF_IP)))
    now = _now()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _load_cert(path: pathlib.Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _load_key(path: pathlib.Path):
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None


def _still_valid(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - _now() > _MIN_REMAINING


def _same_public_key(cert: x509.Certificate, key) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def _usable_ca(
    ca_path: pathlib.Path, ca_key_path: pathlib.Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    cert = _load_cert(ca_path)
    key = _load_key(ca_key_path)
    if cert is None or key is None or not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if not _still_valid(cert) or not _same_public_key(cert, key):
        return None
    if cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value != CA_COMMON_NAME:
        return None
    return cert, key


def _leaf_covers(
    leaf_path: pathlib.Path,
    leaf_key_path: pathlib.Path,
    ca_cert: x509.Certificate,
    hosts: list[str],
) -> bool:
    leaf = _load_cert(leaf_path)
    key = _load_key(leaf_key_path)
    if leaf is None or key is None:
        return False
    if not _still_valid(leaf) or not _same_public_key(leaf, key):
        return False
    try:
        leaf.verify_directly_issued_by(ca_cert)
    except Exception:
        return False
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    dns = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return LEAF_IP in ips and {h.lower() for h in hosts} <= dns


def make_test_pki(directory: pathlib.Path, hosts: list[str]) -> TestPKI:
    """Create (or reuse) a test CA plus a leaf for ``hosts`` + 127.0.0.1 in ``directory``."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hosts = list(dict.fromkeys(h.strip() for h in hosts if h and h.strip()))
    ca_path = directory / "ca.pem"
    ca_key_path = directory / "ca-key.pem"
    leaf_path = directory / "leaf.pem"
    leaf_key_path = directory / "leaf-key.pem"
    pki = TestPKI(ca_cert=ca_path, cert=leaf_path, key=leaf_key_path)

    ca = _usable_ca(ca_path, ca_key_path)
    if ca is not None and _leaf_covers(leaf_path, leaf_key_path, ca[0], hosts):
        return pki

    if ca is None:
        ca_cert, ca_key = _new_ca()
        _write_atomic(ca_key_path, _key_pem(ca_key), 0o600)
        _write_atomic(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    else:
        ca_cert, ca_key = ca

    leaf_cert, leaf_key = _new_leaf(hosts, ca_cert, ca_key)
    _write_atomic(leaf_key_path, _key_pem(leaf_key), 0o600)
    _write_atomic(leaf_path, leaf_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return pki
