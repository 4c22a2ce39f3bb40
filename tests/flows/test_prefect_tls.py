"""Prefect's API clients share one verifying TLS context per CA bundle (flows.prefect_tls)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import certifi
import pytest
from prefect.client.orchestration import PrefectClient, SyncPrefectClient
from prefect.settings import PREFECT_API_TLS_INSECURE_SKIP_VERIFY, temporary_settings

import flows  # noqa: F401 - importing the package installs the sharing
from flows import prefect_tls

API = "http://127.0.0.1:9/api"  # never contacted: building a client opens no connection


def _ssl_context(client: PrefectClient | SyncPrefectClient) -> ssl.SSLContext:
    return client._client._transport._pool._ssl_context  # type: ignore[union-attr,attr-defined]


@pytest.fixture
def bundles_loaded(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Every CA file the real ``ssl.create_default_context`` is asked to load from now on."""
    loaded: list[str | None] = []
    real = ssl.create_default_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        loaded.append(kwargs.get("cafile"))  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    return loaded


def test_importing_flows_installs_the_sharing_in_every_prefect_client_module() -> None:
    """The flows package points each Prefect module that builds a client context at it."""
    assert prefect_tls.installed()


def test_prefect_clients_share_one_verifying_context(bundles_loaded: list[str | None]) -> None:
    """Async and sync clients get the same context, and the CA bundle is loaded at most once."""
    contexts = [
        _ssl_context(PrefectClient(API)),
        _ssl_context(PrefectClient(API)),
        _ssl_context(SyncPrefectClient(API)),
    ]
    assert contexts[0] is contexts[1] is contexts[2]
    assert contexts[0].verify_mode == ssl.CERT_REQUIRED and contexts[0].check_hostname
    assert len(bundles_loaded) <= 1  # 0 when an earlier test already built it


def test_the_insecure_setting_gets_its_own_context_and_leaves_the_shared_one_verifying() -> None:
    """PREFECT_API_TLS_INSECURE_SKIP_VERIFY switches verification off on a context of its own."""
    verifying = _ssl_context(PrefectClient(API))
    with temporary_settings({PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):
        first, second = _ssl_context(PrefectClient(API)), _ssl_context(PrefectClient(API))
    assert first is not verifying and second is not first
    assert first.verify_mode == ssl.CERT_NONE
    assert verifying.verify_mode == ssl.CERT_REQUIRED and verifying.check_hostname
    assert _ssl_context(PrefectClient(API)) is verifying


def test_a_ca_file_that_changes_on_disk_is_loaded_again(tmp_path: Path) -> None:
    """A rotated bundle (new size or modification time) gives a new context; the same one does not."""
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes())
    first = prefect_tls.create_default_context(cafile=str(bundle))
    assert prefect_tls.create_default_context(cafile=str(bundle)) is first
    st = bundle.stat()
    os.utime(bundle, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert prefect_tls.create_default_context(cafile=str(bundle)) is not first


def test_calls_without_a_ca_file_are_never_shared() -> None:
    """The insecure path's call (no CA file, then mutated by its caller) always gets a new context."""
    assert prefect_tls.create_default_context() is not prefect_tls.create_default_context()


def test_a_missing_ca_file_raises_as_ssl_does(tmp_path: Path) -> None:
    """A wrong PREFECT_API_SSL_CERT_FILE fails the way Prefect would have failed, not silently."""
    with pytest.raises(FileNotFoundError):
        prefect_tls.create_default_context(cafile=str(tmp_path / "missing.pem"))
