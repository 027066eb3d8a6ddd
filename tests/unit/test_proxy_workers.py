"""``--workers`` (autellix/proxy/workers.py): the settings each worker gets and the settings error
without Redis. The processes themselves are in tests/integration/test_proxy_workers.py."""

from __future__ import annotations

import pytest

from autellix.cli import main
from autellix.proxy.tenants import ProgramIdSigner, Tenant
from autellix.proxy.workers import shared_settings, worker_settings
from tests.unit.test_proxy_auth import proxy_settings

REDIS = ["--redis-url", "redis://127.0.0.1:1/0"]


def test_workers_need_redis_and_say_so_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["proxy", "--backend", "http://127.0.0.1:1", "--workers", "2"]) == 2
    assert "--workers 2 needs --redis-url" in capsys.readouterr().err
    assert proxy_settings(["--workers", "2", *REDIS]).workers == 2
    assert proxy_settings([]).workers == 1


def test_every_worker_is_a_replica_of_its_own_on_one_port() -> None:
    settings = shared_settings(
        proxy_settings(["--workers", "3", "--port", "0", "--replica-id", "pod", *REDIS])
    )
    assert settings.port != 0
    workers = [worker_settings(settings, index) for index in range(3)]
    assert [w.replica_id for w in workers] == ["pod-0", "pod-1", "pod-2"]
    assert {w.port for w in workers} == {settings.port}
    anonymous = worker_settings(proxy_settings(["--workers", "2", *REDIS]), 1)
    assert anonymous.replica_id is None  # random per process (app.py)


def test_a_random_signing_secret_is_drawn_once_for_all_workers() -> None:
    settings = shared_settings(proxy_settings(["--workers", "2", "--require-signed-ids", *REDIS]))
    secrets = {worker_settings(settings, index).program_id_secret for index in range(2)}
    assert len(secrets) == 1 and None not in secrets
    secret = secrets.pop()
    assert secret is not None and ProgramIdSigner(secret.encode()).verify(
        Tenant(), ProgramIdSigner(secret.encode()).sign(Tenant(), "p")
    )
    given = shared_settings(proxy_settings(["--workers", "2", "--program-id-secret", "x" * 16, *REDIS]))
    assert given.program_id_secret == "x" * 16
