"""
Certificates, keys and client CAs read from PEM files once, and checked.

A missing file, a file that is not PEM, an encrypted key, a key that does
not belong to the certificate: each is a C{ValueError} whose message names
the file and says what is wrong, found while the router starts (or
reloads), never a traceback on the first handshake.  A certificate out of
its validity period is only a warning (L{validityWarnings}): renewing it is
the operator's business, and refusing to start would turn a late renewal
into an outage.

The values keep the parsed objects, so a context can be built again (for a
new session-ticket key) without reading the files again.
"""

import datetime

import attr
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

__all__ = ["Credentials", "loadCredentials", "loadCertificates", "validityWarnings"]


@attr.frozen(eq=False)
class Credentials:
    """
    What one TLS context serves and checks with.

    @ivar chain: the certificate, then the rest of its chain, as the
        certificate file lists them.
    @ivar key: the certificate's private key.
    @ivar clientCAs: the CAs client certificates are checked against
        (empty: none is asked for).
    @ivar clientCertificateRequired: refuse a client without a
        certificate.
    @ivar files: the paths read, for messages: certificate, key and CA file
        (or L{None}).
    """

    chain: tuple
    key: object
    clientCAs: tuple = ()
    clientCertificateRequired: bool = False
    files: tuple = ()

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: a directory, not a {what} file") from None
    except PermissionError:
        raise ValueError(f"{path}: the {what} file cannot be read (permission denied)") from None
    except OSError as e:
        raise ValueError(f"{path}: the {what} file cannot be read ({e.strerror})") from None


def loadCertificates(path: str, what: str = "certificate") -> tuple:
    """
    The certificates of the PEM file C{path}, in order.

    @raise ValueError: it cannot be read or holds no PEM certificate.
    """
    data = _read(path, what)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError(f"{path}: not a PEM {what} file (no BEGIN CERTIFICATE line)")
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError as e:
        raise ValueError(f"{path}: a broken PEM certificate ({e})") from None


def _loadKey(path: str):
    data = _read(path, "key")
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        raise ValueError(f"{path}: not a PEM private key file (no BEGIN ... PRIVATE KEY line)")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError(f"{path}: the key is encrypted (give it without a passphrase)") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ValueError(f"{path}: a broken or unsupported PEM private key ({e})") from None


def _publicBytes(publicKey) -> bytes:
    return publicKey.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def loadCredentials(
    certificate: str,
    key: str,
    clientCA: "str | None" = None,
    clientCertificateRequired: bool = False,
) -> Credentials:
    """
    Read and check the files of one TLS context.

    @param certificate: the PEM certificate file; certificates after the
        first are its chain, sent along with it.
    @param key: the PEM private key file (unencrypted).
    @param clientCA: the PEM file of client CAs, or L{None}.
    @raise ValueError: a file is missing, unreadable or not what it should
        be, or the key is not the certificate's; the message names the
        file.
    """
    chain = loadCertificates(certificate)
    privateKey = _loadKey(key)
    if _publicBytes(privateKey.public_key()) != _publicBytes(chain[0].public_key()):
        raise ValueError(f"{key}: this key does not match the certificate in {certificate}")
    cas = loadCertificates(clientCA, "client CA") if clientCA is not None else ()
    return Credentials(
        chain=chain,
        key=privateKey,
        clientCAs=cas,
        clientCertificateRequired=clientCertificateRequired and bool(cas),
        files=(certificate, key, clientCA),
    )


def validityWarnings(credentials: Credentials, now: datetime.datetime) -> list:
    """
    What is wrong with the validity period of C{credentials}' certificate
    at C{now} (an aware datetime): a list of messages naming the file,
    empty if nothing is.
    """
    cert, path = credentials.certificate, credentials.files[0] if credentials.files else "?"
    if cert.not_valid_after_utc < now:
        return [f"{path}: the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"]
    if cert.not_valid_before_utc > now:
        return [f"{path}: the certificate is not valid before"
                f" {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"]
    return []
