"""
A self-signed certificate for C{localhost} and C{127.0.0.1}, for TLS
listeners in tests.
"""

import datetime
import ipaddress
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def selfSigned(directory) -> tuple:
    """
    Write C{key.pem} and C{cert.pem} to C{directory}, and both (key then
    certificate) to C{directory/pems/both.pem}, as Twisted's C{tls:}
    endpoint reads a directory of them.

    @return: the paths of the key, the certificate and the certificate's
        PEM bytes.
    """
    directory = pathlib.Path(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyPEM = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    certPEM = cert.public_bytes(serialization.Encoding.PEM)
    keyPath, certPath = directory / "key.pem", directory / "cert.pem"
    keyPath.write_bytes(keyPEM)
    certPath.write_bytes(certPEM)
    (directory / "pems").mkdir()
    (directory / "pems" / "both.pem").write_bytes(keyPEM + certPEM)
    return keyPath, certPath, certPEM
