"""TLS: a self-signed CA and a server certificate made here, tritonserver with gRPC SSL, clients with and without
the CA (from the config and from the environment)."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx_models
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from triton_helpers import build_repository

from backends.triton import ENV_ROOT_CERTIFICATES, TritonConfig, TritonInference
from backends.triton_server import TritonServer, TritonServerConfig
from inference_iface import BackendUnavailableError

pytestmark = pytest.mark.server


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA (self-signed) and a server certificate for 127.0.0.1/localhost signed by it, as PEM files."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("trkx test CA"))
        .issuer_name(_name("trkx test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, paths["key"])
    return paths


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, model_dir, certificates) -> Iterator[TritonServer]:
    repository = build_repository(
        tmp_path_factory.mktemp("repository"), {"two_in_two_out": onnx_models.two_in_two_out(model_dir)}
    )
    config = TritonServerConfig(
        repository=str(repository),
        grpc_ssl_certificate=str(certificates["cert"]),
        grpc_ssl_private_key=str(certificates["key"]),
    )
    with TritonServer(config) as server:
        yield server


def _check(iface: TritonInference) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(iface.infer({"input.1": x, "y:0": x}).sum, x + x)


def test_client_with_the_ca_connects(tls_server, certificates):
    with TritonInference(
        TritonConfig(url=tls_server.grpc_url, model_name="two_in_two_out", root_certificates=str(certificates["ca"]))
    ) as iface:
        _check(iface)
        assert "tls=on" in iface.describe()


def test_ca_from_the_environment(tls_server, certificates, monkeypatch):
    monkeypatch.setenv(ENV_ROOT_CERTIFICATES, str(certificates["ca"]))
    with TritonInference(TritonConfig(url=tls_server.grpc_url, model_name="two_in_two_out")) as iface:
        _check(iface)


def test_tls_without_the_ca_is_a_clear_tls_error(tls_server, monkeypatch):
    monkeypatch.delenv(ENV_ROOT_CERTIFICATES, raising=False)
    with pytest.raises(BackendUnavailableError, match=r"(?s)CERTIFICATE_VERIFY_FAILED.*TLS: check root_certificates"):
        TritonInference(TritonConfig(url=tls_server.grpc_url, model_name="two_in_two_out", tls=True, retries=0))


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server, monkeypatch):
    monkeypatch.delenv(ENV_ROOT_CERTIFICATES, raising=False)
    with pytest.raises(BackendUnavailableError, match="no server answered"):
        TritonInference(TritonConfig(url=tls_server.grpc_url, model_name="two_in_two_out", connect_timeout_s=2))
