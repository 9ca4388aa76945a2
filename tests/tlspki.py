"""
A test CA and the certificates it signs, written as PEM files, for the TLS
tests: server certificates for names, client certificates with subjects.
"""

import datetime
import pathlib

import attr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _keyPEM(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


@attr.frozen
class Issued:
    """
    A certificate and its key, and where they were written.
    """

    certificate: x509.Certificate
    key: object
    certificatePath: str
    keyPath: str


class PrivateCA:
    """
    A self-signed CA in C{directory} (C{<name>.crt}, C{<name>.key}).
    """

    def __init__(self, directory, name: str = "ca", commonName: str = "txrouter test CA") -> None:
        self.directory = pathlib.Path(directory)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - _DAY).not_valid_after(_now() + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = str(self.directory / f"{name}.crt")
        pathlib.Path(self.path).write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        (self.directory / f"{name}.key").write_bytes(_keyPEM(self.key))

    def issue(
        self,
        stem: str,
        names=(),
        subject: "x509.Name | None" = None,
        client: bool = False,
        notBefore=None,
        notAfter=None,
        directory=None,
    ) -> Issued:
        """
        Sign a certificate and write C{<stem>.crt} and C{<stem>.key}.

        @param names: DNS names (the first is the common name unless
            C{subject} is given).
        @param client: for client authentication (else server).
        """
        directory = pathlib.Path(directory or self.directory)
        key = ec.generate_private_key(ec.SECP256R1())
        if subject is None:
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else stem)])
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(notBefore or _now() - _DAY)
            .not_valid_after(notAfter or _now() + 10 * _DAY)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        certificatePath, keyPath = directory / f"{stem}.crt", directory / f"{stem}.key"
        certificatePath.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        keyPath.write_bytes(_keyPEM(key))
        return Issued(certificate, key, str(certificatePath), str(keyPath))


def clientContext(ca: "PrivateCA | None" = None, client: "Issued | None" = None,
                  maximum=None, minimum=None, ciphers: "bytes | None" = None,
                  protocols=()):
    """
    A pyOpenSSL client context: trusting C{ca} (and checking the server's
    certificate) if given, presenting C{client} if given.
    """
    from OpenSSL import SSL
    from OpenSSL.crypto import X509

    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if minimum is not None:
        context.set_min_proto_version(minimum)
    if maximum is not None:
        context.set_max_proto_version(maximum)
    if ciphers is not None:
        context.set_cipher_list(ciphers)
    if ca is not None:
        context.get_cert_store().add_cert(X509.from_cryptography(ca.certificate))
        context.set_verify(SSL.VERIFY_PEER)
    if client is not None:
        context.use_certificate(client.certificate)
        context.use_privatekey(client.key)
    if protocols:
        context.set_alpn_protos(list(protocols))
    return context


class HandshakeFailed(Exception):
    """
    A memory handshake failed: C{side} (C{"server"} or C{"client"}) raised
    C{error}.
    """

    def __init__(self, side: str, error: Exception) -> None:
        super().__init__(side, error)
        self.side, self.error = side, error


def _move(source, destination) -> bool:
    from OpenSSL import SSL

    try:
        data = source.bio_read(65536)
    except SSL.WantReadError:
        return False
    destination.bio_write(data)
    return True


def handshake(serverContext, client, serverName: "bytes | None" = None, session=None):
    """
    A TLS handshake in memory between a server connection on
    C{serverContext} and a client on the context C{client}, resuming
    C{session} if given.

    @return: C{(server, client)} connections, handshake done.
    @raise HandshakeFailed: either side failed.
    """
    from OpenSSL import SSL

    server = SSL.Connection(serverContext)
    server.set_accept_state()
    clientConnection = SSL.Connection(client)
    clientConnection.set_connect_state()
    if serverName is not None:
        clientConnection.set_tlsext_host_name(serverName)
    if session is not None:
        clientConnection.set_session(session)
    done = {"server": False, "client": False}
    for _ in range(50):
        for side, connection in (("client", clientConnection), ("server", server)):
            if not done[side]:
                try:
                    connection.do_handshake()
                    done[side] = True
                except SSL.WantReadError:
                    pass
                except SSL.Error as e:
                    _move(connection, server if side == "client" else clientConnection)
                    raise HandshakeFailed(side, e) from None
        moved = _move(clientConnection, server) | _move(server, clientConnection)
        if all(done.values()) and not moved:
            return server, clientConnection
    raise AssertionError("the handshake did not finish")


def served(server) -> str:
    """
    The common name of the certificate C{server} (a connection) served.
    """
    from cryptography.x509.oid import NameOID

    certificate = server.get_certificate(as_cryptography=True)
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
