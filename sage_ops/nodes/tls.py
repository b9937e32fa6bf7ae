"""Ray TLS for the daemon's cluster (`ray.tls`): a CA of the daemon's own signs the head's
certificate and each node's; every Ray process gets RAY_USE_TLS and its certificate, key and the
CA (ray_env), so each gRPC channel of the cluster is mutual TLS: a client without a certificate
of this CA is refused by every Ray port.

The CA's key never leaves the daemon's state dir (0700, keys 0600). A node's key is made on the
node (`python -m sage_ops.nodes.tls keygen DIR`, by `nodes add`) and never leaves it: the daemon
gets a CSR, checks it, and signs the public key with names it chooses itself. Paths to the files
are all that ever appears on a command line or in an environment.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY, CERT, KEY = "ca.pem", "ca.key", "cert.pem", "key.pem"
VALID = datetime.timedelta(days=3650)  # no rotation yet: a new CA means `daemon stop --ray` and adding nodes again
MAX_NAMES = 32
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}$")


class TlsError(Exception):
    """Certificates cannot be made or signed; one line."""


def ray_env(directory: str | os.PathLike[str]) -> dict[str, str]:
    """Ray's TLS variables for a process whose certificate, key and CA are in `directory`."""
    d = str(directory)
    return {"RAY_USE_TLS": "1", "RAY_TLS_SERVER_CERT": f"{d}/{CERT}", "RAY_TLS_SERVER_KEY": f"{d}/{KEY}",
            "RAY_TLS_CA_CERT": f"{d}/{CA_CERT}"}


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write `data` into `path` with `mode` from the first byte (never through a link)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)


def _private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = directory.lstat()
    if not directory.is_dir() or directory.is_symlink() or st.st_uid != os.getuid():
        raise TlsError(f"{directory} is not a directory of this user")
    os.chmod(directory, 0o700)


def _new_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    _write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), 0o600)
    return key


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{path} is not an EC key")
    return key


def local_names() -> list[str]:
    """The names this machine's Ray is reached by: loopback, its host names and addresses."""
    names = ["localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()]
    try:
        names += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: the address of the default route
            names.append(s.getsockname()[0])
    except OSError:
        pass
    return list(dict.fromkeys(n for n in names if n))


def _alt_names(names: list[str]) -> x509.SubjectAlternativeName:
    """Each name as a DNS name, and an address also as an IP entry (gRPC matches either)."""
    entries: list[x509.GeneralName] = []
    for name in names:
        entries.append(x509.DNSName(name))
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            pass
    return x509.SubjectAlternativeName(entries)


def _issue(subject_key: ec.EllipticCurvePublicKey, names: list[str], ca_key: ec.EllipticCurvePrivateKey,
           ca: x509.Certificate) -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
            .issuer_name(ca.subject).public_key(subject_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(_alt_names(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def ensure_head(directory: Path, also: Sequence[str] = ()) -> dict[str, str]:
    """The cluster CA and the head's certificate in `directory` (made once, and again when it
    lacks a name of `also`, the head's `ray.node_ip`); Ray's TLS variables for the head and the
    daemon's own driver."""
    _private_dir(directory)
    ca_key_path, ca_path = directory / CA_KEY, directory / CA_CERT
    if not ca_key_path.exists() or not ca_path.exists():
        ca_key = _new_key(ca_key_path)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sage-ops cluster CA {socket.gethostname()}")])
        now = datetime.datetime.now(datetime.timezone.utc)
        ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + VALID)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                           crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        _write(ca_path, ca.public_bytes(serialization.Encoding.PEM), 0o644)
        for stale in (directory / KEY, directory / CERT):  # signed by an earlier CA
            stale.unlink(missing_ok=True)
    if not (directory / KEY).exists() or not (directory / CERT).exists() or not _names_all(directory / CERT, also):
        key = _new_key(directory / KEY)
        _write(directory / CERT, sign_key(directory, key.public_key(), list(dict.fromkeys([*local_names(), *also]))),
               0o644)
    return ray_env(directory)


def _names_all(cert_path: Path, names: Sequence[str]) -> bool:
    """Does the certificate name every one of `names`?"""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(names) <= set(alt.get_values_for_type(x509.DNSName))


def sign_key(directory: Path, public_key: ec.EllipticCurvePublicKey, names: list[str]) -> bytes:
    """A certificate of the CA in `directory` for `public_key` with `names` (the first is its CN)."""
    ca = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    try:
        ca_key = _load_key(directory / CA_KEY)
    except OSError as exc:
        raise TlsError(f"cannot read the cluster CA key {directory / CA_KEY}: {exc.strerror}") from None
    return _issue(public_key, names, ca_key, ca)


def sign_csr(directory: Path, csr_pem: bytes, names: list[str]) -> bytes:
    """Sign a node's CSR: only its public key is taken (its signature checked); the names are
    the ones given here, not the ones the CSR asks for."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise TlsError("the node sent no valid certificate request") from None
    key = csr.public_key()
    if not csr.is_signature_valid or not isinstance(key, ec.EllipticCurvePublicKey):
        raise TlsError("the node's certificate request is not signed by an EC key")
    good = [n for n in dict.fromkeys(names) if _NAME.match(n)][:MAX_NAMES]
    if not good:
        raise TlsError("no usable name for the node's certificate")
    return sign_key(directory, key, good)


def ca_pem(directory: Path) -> bytes:
    return (directory / CA_CERT).read_bytes()


def keygen(directory: Path) -> dict[str, object]:
    """On a node: a new key in `directory` (0700, key 0600) and its CSR, with the node's names."""
    _private_dir(directory)
    key = _new_key(directory / KEY)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname()[:64] or "node")]))
           .sign(key, hashes.SHA256()))
    return {"csr": csr.public_bytes(serialization.Encoding.PEM).decode(), "names": local_names()}


if __name__ == "__main__":  # `python -m sage_ops.nodes.tls keygen DIR`, run by `nodes add` on the node
    if len(sys.argv) != 3 or sys.argv[1] != "keygen":
        sys.exit("usage: python -m sage_ops.nodes.tls keygen DIR")
    os.umask(0o077)
    print(json.dumps(keygen(Path(sys.argv[2]))))
