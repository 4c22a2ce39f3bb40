"""The gateway serves HTTPS itself (`runbook gateway --tls-cert --tls-key`): a sender that trusts the
certificate gets its 2xx over TLS and the alert is stored; plain HTTP to that port gets nothing; bad TLS
options are refused before anything starts, naming the files and never their content."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from runbook.errors import ConfigError
from runbook.gateway import create_app
from runbook.gateway.config import GatewayConfig
from runbook.gateway.server import tls_options, uvicorn_config
from runbook.ledger import Ledger
from tests.gateway.conftest import TOKEN


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "runbook-gateway-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "gateway.crt", folder / "gateway.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key in tmp_path."""
    return _self_signed(tmp_path)


@pytest.fixture
def https_gateway(ledger: Ledger, tls_files: tuple[Path, Path]) -> Iterator[int]:
    """The gateway over ``ledger`` served by uvicorn with TLS on a free port; yields the port."""
    cert, key = tls_files
    app = create_app(
        ledger, GatewayConfig.from_env({"RUNBOOK_GATEWAY_TOKEN": TOKEN}), launcher=None
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn_config(app, **tls_options(cert, key)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the TLS gateway did not start"
    yield port
    server.should_exit = True
    thread.join(10)


def test_alert_over_https_is_acknowledged_and_stored(
    https_gateway: int, ledger: Ledger, tls_files: tuple[Path, Path]
) -> None:
    """A client verifying the gateway's certificate posts an alert: 202, one incident opened."""
    cert, _ = tls_files
    context = ssl.create_default_context(cafile=str(cert))
    response = httpx.post(
        f"https://127.0.0.1:{https_gateway}/hooks/generic",
        json={"key": "tls-check", "summary": "over TLS", "service": "web"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        verify=context,
        timeout=10,
    )
    assert response.status_code == 202, response.text
    (incident_id,) = response.json()["opened"]
    assert ledger.get_incident(incident_id).title == "over TLS"


def test_plain_http_to_the_tls_port_gets_no_answer(https_gateway: int) -> None:
    """Plain HTTP is not served on a TLS port: the request fails, nothing is acknowledged."""
    with pytest.raises(httpx.HTTPError):
        httpx.post(
            f"http://127.0.0.1:{https_gateway}/hooks/generic",
            json={"key": "plain"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )


def test_tls_options_refuse_incomplete_missing_or_mismatched_files(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    """Only one file, a missing file, or a key that is not the certificate's: a ConfigError that
    names the option and the file; no TLS options for plain HTTP; the key's content never shows."""
    cert, key = tls_files
    assert tls_options(None, None) == {}
    assert tls_options(cert, key) == {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    with pytest.raises(ConfigError, match="both --tls-cert and --tls-key"):
        tls_options(cert, None)
    with pytest.raises(ConfigError, match=r"--tls-key .*nope\.key: no such file"):
        tls_options(cert, tmp_path / "nope.key")
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = _self_signed(other)
    with pytest.raises(ConfigError, match="do not load") as caught:
        tls_options(cert, other_key)
    assert "PRIVATE KEY" not in str(caught.value)
    assert other_key.read_text().splitlines()[1] not in str(caught.value)
