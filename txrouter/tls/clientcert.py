"""
The vars uWSGI's HTTPS router adds for a TLS client (its
C{hr_https_add_vars}, C{plugins/http/https.c}), in its order:

  - C{HTTPS}: C{on};
  - with a client certificate: C{HTTPS_CLIENT_CERTIFICATE}, the
    certificate's raw DER bytes (C{i2d_X509}); C{HTTPS_DN}, its subject as
    OpenSSL's C{X509_NAME_oneline} writes it (C{/C=FR/O=x/CN=name}); and,
    with C{--https-export-cert}, C{HTTPS_CC}, the certificate in PEM.

A uwsgi var holds at most 65535 bytes; a certificate that does not fit is
an error (the request's vars could not be sent), not a var left out.
"""

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = ["httpsVars", "clientCertificateVars", "onelineName"]

#: The longest uwsgi var value.
_MAX_VALUE = 0xFFFF

#: OpenSSL's short names (C{OBJ_nid2sn}) of the attribute types of names;
#: any other type is written as its dotted OID, as OpenSSL does for those
#: it does not know.
_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "street",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "title",
    "2.5.4.13": "description",
    "2.5.4.15": "businessCategory",
    "2.5.4.17": "postalCode",
    "2.5.4.41": "name",
    "2.5.4.42": "GN",
    "2.5.4.43": "initials",
    "2.5.4.44": "generationQualifier",
    "2.5.4.46": "dnQualifier",
    "2.5.4.65": "pseudonym",
    "2.5.4.97": "organizationIdentifier",
    "1.2.840.113549.1.9.1": "emailAddress",
    "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
}

_GENERAL_STRING = 27

#: How OpenSSL 3 writes each byte of a value: printable ASCII as itself,
#: but C{/} and C{+} behind a backslash (OpenSSL 1.1 left them bare), any
#: other byte as C{\\xHH}.
_SHOWN = [
    ("\\" + chr(byte) if chr(byte) in "/+" else chr(byte)) if 0x20 <= byte <= 0x7E
    else f"\\x{byte:02X}"
    for byte in range(256)
]


def _element(data: bytes, offset: int):
    """
    The DER element at C{offset}: C{(tag, contents, next offset)}.
    """
    tag = data[offset]
    length = data[offset + 1]
    offset += 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[offset:offset + size], "big")
        offset += size
    return tag, data[offset:offset + length], offset + length


def _children(contents: bytes):
    offset = 0
    while offset < len(contents):
        tag, inner, offset = _element(contents, offset)
        yield tag, inner


def _oidText(contents: bytes) -> str:
    numbers, value = [], 0
    for byte in contents:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            numbers.append(value)
            value = 0
    first = numbers[0]
    head = [first // 40, first % 40] if first < 80 else [2, first - 80]
    return ".".join(map(str, head + numbers[1:]))


def _shown(value: bytes, tag: int) -> str:
    if tag == _GENERAL_STRING and len(value) % 4 == 0 and not any(
            value[j] for j in range(len(value)) if j % 4 != 3):
        # OpenSSL's reading of a GeneralString of 4-byte characters.
        value = value[3::4]
    return "".join(_SHOWN[byte] for byte in value)


def onelineName(name: x509.Name) -> str:
    """
    C{name} as OpenSSL's C{X509_NAME_oneline} writes it: C{/TYPE=value}
    per attribute, in the certificate's order (C{+TYPE=value} for the
    second and later of a multi-valued RDN); value bytes outside
    printable ASCII as C{\\xHH}, C{/} and C{+} as C{\\/} and C{\\+}
    (OpenSSL 3); the empty name as the empty string.
    """
    _, rdns, _ = _element(name.public_bytes(), 0)
    parts = []
    for _, rdn in _children(rdns):
        separator = "/"
        for _, attribute in _children(rdn):
            (_, oid), (tag, value) = _children(attribute)
            dotted = _oidText(oid)
            parts.append(f"{separator}{_SHORT_NAMES.get(dotted, dotted)}={_shown(value, tag)}")
            separator = "+"
    return "".join(parts)


def _checked(name: bytes, value: bytes):
    if len(value) > _MAX_VALUE:
        raise ValueError(f"{name.decode()} would be {len(value)} bytes, more than a uwsgi var holds")
    return name, value


def clientCertificateVars(transport, exportCertificate: bool = False) -> list:
    """
    The client-certificate vars of the TLS connection under C{transport}
    (C{HTTPS_CLIENT_CERTIFICATE}, C{HTTPS_DN}, and with
    C{exportCertificate} C{HTTPS_CC}), as C{(name, value)} byte strings;
    empty without TLS or without a client certificate.

    @raise ValueError: a value is longer than a uwsgi var holds.
    """
    getHandle = getattr(transport, "getHandle", None)
    handle = getHandle() if getHandle is not None else None
    getPeerCertificate = getattr(handle, "get_peer_certificate", None)
    if getPeerCertificate is None:
        return []
    certificate = getPeerCertificate(as_cryptography=True)
    if certificate is None:
        return []
    found = [
        _checked(b"HTTPS_CLIENT_CERTIFICATE", certificate.public_bytes(Encoding.DER)),
        _checked(b"HTTPS_DN", onelineName(certificate.subject).encode("ascii")),
    ]
    if exportCertificate:
        found.append(_checked(b"HTTPS_CC", certificate.public_bytes(Encoding.PEM)))
    return found


def httpsVars(transport, exportCertificate: bool = False) -> list:
    """
    C{HTTPS=on} then L{clientCertificateVars}: all uWSGI adds for a
    connection of a TLS listener.
    """
    return [(b"HTTPS", b"on"), *clientCertificateVars(transport, exportCertificate)]
