"""Certificates and keys for a real federation: a consortium CA, the SuperLink's TLS
server certificate, and each hospital's SuperNode authentication key pair.

Made with the ``cryptography`` package only (no openssl). What flwr 1.41 expects, checked
in its source:

- SuperLink TLS: ``flower-superlink --ssl-ca-certfile CA --ssl-certfile CERT --ssl-keyfile
  KEY`` (PEM). The certificate's subjectAltName must hold the address the SuperNodes and
  the ``flwr`` CLI dial (IP address or DNS name). SuperNodes verify it with
  ``--root-certificates CA``.
- SuperNode authentication: ``flower-supernode --auth-supernode-private-key KEY`` reads
  an OpenSSH private key (``load_ssh_private_key``) that must be an EC key;
  ``flwr supernode register KEY.pub`` reads an OpenSSH public key (``load_ssh_public_key``)
  on a NIST curve. We use P-384, as Flower's documentation does. (The older
  ``--auth-list-public-keys`` CSV and ``--auth-supernode-public-key`` are deprecated.)

Layout of ``OUT`` (every private key mode 0600)::

    ca.crt, ca.key                     consortium CA (EC P-256, self-signed)
    superlink.crt, superlink.key       SuperLink TLS server certificate and key
    supernode-auth/<site>.key, .pub    a site's authentication key pair (EC P-384, OpenSSH)
    certs.json                         what was made: hosts, expiry, key fingerprints
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.atomic import write_bytes_atomic
from shared.errors import ConfigError, InputError, OutputExistsError
from shared.signing.keys import check_private_key_mode

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "superlink.crt", "superlink.key"
AUTH_DIR = "supernode-auth"
MANIFEST = "certs.json"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class CertFiles:
    """Paths of what :func:`make_certs` wrote or reused under ``out``."""

    out: Path
    ca_cert: Path | None = None
    ca_key: Path | None = None
    server_cert: Path | None = None
    server_key: Path | None = None
    site_keys: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # site → (private, public)
    ca_reused: bool = False


def auth_key_paths(out: Path, site: str) -> tuple[Path, Path]:
    """(private, public) authentication key paths of ``site`` under ``out``."""
    return out / AUTH_DIR / f"{site}.key", out / AUTH_DIR / f"{site}.pub"


def check_site_name(site: str) -> str:
    """A site name usable as a file name and a SuperNode name; ConfigError otherwise."""
    if not SITE_NAME.match(site):
        raise ConfigError(f"site name {site!r} must be 1–64 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    return site


def subject_alt_names(host: str, *, loopback: bool) -> list[x509.GeneralName]:
    """SAN entries for ``host`` (an IP address or a DNS name), plus loopback names if asked.

    Raises
    ------
    ConfigError
        ``host`` is neither an IP address nor a valid DNS name.
    """
    names: list[x509.GeneralName] = []
    for name in (host, *(LOOPBACK_NAMES if loopback else ())):
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            labels = name.rstrip(".").split(".")
            if not name or len(name) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
                raise ConfigError(f"--superlink-host {name!r} is neither an IP address nor a DNS name "
                                  "(letters, digits and '-' in dot-separated labels)") from None
            entry = x509.DNSName(name.rstrip(".").lower())
        if entry not in names:
            names.append(entry)
    return names


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RareGraph-Synth consortium"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(*, common_name: str, not_before: dt.datetime, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate (EC P-256) that may sign server certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_server_cert(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, host: str, loopback: bool,
                     not_before: dt.datetime, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The SuperLink's TLS server certificate (EC P-256), signed by the CA, ``host`` in its SAN."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(host, loopback=loopback)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_agreement=True,
                                     content_commitment=False, data_encipherment=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def make_auth_keypair(site: str) -> tuple[bytes, bytes]:
    """(OpenSSH private key, OpenSSH public key line) of a new EC P-384 SuperNode auth key."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + f" {site}\n".encode()


def ssh_fingerprint(public_line: bytes) -> str:
    """OpenSSH-style fingerprint ``SHA256:...`` of a public key line (what ``ssh-keygen -l`` shows)."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _load_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = out / CA_CERT, out / CA_KEY
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError as exc:
        raise InputError(f"existing CA is not readable PEM ({exc}); remove {cert_path} and {key_path} to make a new "
                         "CA (every certificate it signed must then be remade)", file=out) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise InputError(f"{key_path} is not the private key of {cert_path}", file=out)
    check_private_key_mode(key_path, key_path.stat().st_mode)  # as for every private key we load
    return cert, key


def _read_manifest(out: Path) -> dict:
    path = out / MANIFEST
    if not path.is_file():
        return {"sites": {}}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", file=path, line=exc.lineno) from None
    data.setdefault("sites", {})
    return data


def make_certs(out: str | Path, *, superlink_host: str | None = None, sites: list[str] = (),
               loopback: bool = False, overwrite: bool = False, ca_days: int = 3650, server_days: int = 825,
               now: dt.datetime | None = None) -> CertFiles:
    """Write the CA, the SuperLink certificate and the sites' authentication key pairs.

    Parameters
    ----------
    out
        Folder (created if needed).
    superlink_host
        The address SuperNodes dial (IP or DNS name). Given: the SuperLink certificate is made
        (and the CA, unless ``out`` already holds one, which is then reused). None: site keys only
        (what a hospital runs to make its own key and send the coordinator the ``.pub``).
    sites
        Site names; one authentication key pair each.
    loopback
        Also put ``localhost``, ``127.0.0.1`` and ``::1`` in the SuperLink certificate.
    overwrite
        Replace an existing SuperLink certificate or site key. An existing CA is always
        reused, never replaced (remove it by hand to start a new trust root).
    ca_days, server_days
        Validity in days, from ``now`` (UTC; default: now minus 5 minutes for clock skew).

    Raises
    ------
    ConfigError
        Nothing asked for, a bad host or site name, duplicate sites, non-positive validity.
    OutputExistsError
        A file to write exists and ``overwrite`` is false (nothing is written then).
    InputError
        An existing CA cannot be read or its key does not match.
    """
    out = Path(out)
    sites = [check_site_name(s) for s in sites]
    if len(set(sites)) != len(sites):
        raise ConfigError(f"site names must be distinct, got {sites}")
    if superlink_host is None and not sites:
        raise ConfigError("nothing to make: give --superlink-host (CA and SuperLink certificate) and/or sites")
    if ca_days < 1 or server_days < 1:
        raise ConfigError("certificate validity must be at least one day")
    if superlink_host is not None:
        san = subject_alt_names(superlink_host, loopback=loopback)  # validate before writing anything
    targets = [p for s in sites for p in auth_key_paths(out, s)]
    if superlink_host is not None:
        targets += [out / SERVER_CERT, out / SERVER_KEY]
        ca_present = [p.exists() for p in (out / CA_CERT, out / CA_KEY)]
        if any(ca_present) and not all(ca_present):
            missing = CA_CERT if not ca_present[0] else CA_KEY
            raise InputError(f"half a CA: {missing} is missing; restore it, or remove the other file to make a new CA",
                             file=out)
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]}: already exists ({len(existing)} file(s) in all); refusing to replace "
                                "keys or certificates (pass --overwrite to replace them)")
    not_before = (now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(minutes=5)
    manifest = _read_manifest(out)
    files = CertFiles(out=out)
    out.mkdir(parents=True, exist_ok=True)
    if superlink_host is not None:
        reused = (out / CA_CERT).exists()
        if reused:
            ca_cert, ca_key = _load_ca(out)
        else:
            ca_cert, ca_key = make_ca(common_name="RareGraph-Synth consortium CA", not_before=not_before, days=ca_days)
            write_bytes_atomic(out / CA_KEY, _key_pem(ca_key), mode=0o600)
            write_bytes_atomic(out / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM))
        cert, key = make_server_cert(ca_cert, ca_key, host=superlink_host, loopback=loopback, not_before=not_before,
                                     days=server_days)
        write_bytes_atomic(out / SERVER_KEY, _key_pem(key), mode=0o600)
        write_bytes_atomic(out / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM))
        manifest["ca"] = {"file": CA_CERT, "subject": ca_cert.subject.rfc4514_string(),
                          "not_after": ca_cert.not_valid_after_utc.isoformat()}
        manifest["superlink"] = {"file": SERVER_CERT, "host": superlink_host,
                                 "subject_alt_names": [str(getattr(n, "value", n)) for n in san],
                                 "not_after": cert.not_valid_after_utc.isoformat()}
        files = CertFiles(out=out, ca_cert=out / CA_CERT, ca_key=out / CA_KEY, server_cert=out / SERVER_CERT,
                          server_key=out / SERVER_KEY, ca_reused=reused)
    if sites:
        (out / AUTH_DIR).mkdir(exist_ok=True)
    for site in sites:
        private, public = make_auth_keypair(site)
        key_path, pub_path = auth_key_paths(out, site)
        write_bytes_atomic(key_path, private, mode=0o600)
        write_bytes_atomic(pub_path, public)
        manifest["sites"][site] = {"private_key": str(key_path.relative_to(out)),
                                   "public_key": str(pub_path.relative_to(out)), "fingerprint": ssh_fingerprint(public)}
        files.site_keys[site] = (key_path, pub_path)
    write_bytes_atomic(out / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return files
