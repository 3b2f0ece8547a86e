"""A throwaway CA and one server certificate for the provider host names, made per test session."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Every upstream host keyrelay may forward to; the fake provider answers for all of them.
PROVIDER_HOSTS: tuple[str, ...] = (
    "api.anthropic.com",
    "api.openai.com",
    "api.elevenlabs.io",
    "fal.run",
    "queue.fal.run",
    "rest.fal.ai",
    "rest.alpha.fal.ai",
    "api.inference.sh",
    "generativelanguage.googleapis.com",
    "api.eachlabs.ai",
    "api.runware.ai",
)
DEFAULT_SERVER_NAMES: tuple[str, ...] = (*PROVIDER_HOSTS, "localhost")


@dataclass(frozen=True)
class TlsMaterial:
    """Paths of the PEM files written by make_test_ca, and the names the server cert covers."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    server_chain: Path  # leaf then CA, for servers that should send the whole chain
    server_names: tuple[str, ...]

    def client_context(self) -> ssl.SSLContext:
        """Trusts only this CA: given a cafile, create_default_context skips system roots."""
        return ssl.create_default_context(cafile=str(self.ca_cert))

    def server_context(self, alpn: Iterable[str] = ("http/1.1",)) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.server_chain), str(self.server_key))
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    *,
    ca: bool,
) -> x509.CertificateBuilder:
    """What the CA and the server certificate have in common; only a CA may sign certificates."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def make_test_ca(
    directory: Path,
    extra_names: Iterable[str] = (),
    *,
    ca_name: str = "keyrelay test CA",
) -> TlsMaterial:
    """Write ca.pem, ca-key.pem, server-cert.pem, server-key.pem and server-chain.pem.

    EC P-256 keeps generation in the low milliseconds. Extra names may be DNS names (wildcards
    allowed) or IP literals. Extensions follow what OpenSSL's strict verification expects
    (SKI/AKI, key usages), so both Python's ssl and mitmproxy accept the chain.
    """
    directory.mkdir(parents=True, exist_ok=True)
    names = tuple(dict.fromkeys((*DEFAULT_SERVER_NAMES, *extra_names)))
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(days=1)
    not_after = now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        _builder(ca_subject, ca_subject, ca_key, not_before, not_after, ca=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    server_cert = (
        _builder(server_subject, ca_subject, server_key, not_before, not_after, ca=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    server_pem = server_cert.public_bytes(serialization.Encoding.PEM)
    paths = TlsMaterial(
        directory=directory,
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca-key.pem",
        server_cert=directory / "server-cert.pem",
        server_key=directory / "server-key.pem",
        server_chain=directory / "server-chain.pem",
        server_names=names,
    )
    paths.ca_cert.write_bytes(ca_pem)
    paths.ca_key.write_bytes(_key_pem(ca_key))
    paths.server_cert.write_bytes(server_pem)
    paths.server_key.write_bytes(_key_pem(server_key))
    paths.server_chain.write_bytes(server_pem + ca_pem)
    for key_path in (paths.ca_key, paths.server_key):
        key_path.chmod(0o600)
    return paths
