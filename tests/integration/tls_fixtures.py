"""A throwaway PKI for the TLS tests, made with the `cryptography` library (an installed dependency of
ansible-core): a CA, a server certificate it signs for 127.0.0.1, and another CA that signed nothing the
servers present (the "wrong CA" a client must refuse). PEM bytes, nothing written to disk here."""
import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject_key, subject, issuer_key, issuer, ca, sans=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(obj):
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_pki(host="127.0.0.1"):
    """{"ca", "other_ca", "server_cert", "server_key"}: PEM bytes; the server certificate names ``host``
    (an IP address SAN), signed by "ca"."""
    ca_key, other_key, server_key = _key(), _key(), _key()
    ca = _cert(ca_key, "fediflow test CA", ca_key, "fediflow test CA", True)
    other = _cert(other_key, "another CA", other_key, "another CA", True)
    server = _cert(server_key, host, ca_key, "fediflow test CA", False, [x509.IPAddress(ipaddress.ip_address(host))])
    return {"ca": _pem(ca), "other_ca": _pem(other), "server_cert": _pem(server), "server_key": _pem(server_key)}
