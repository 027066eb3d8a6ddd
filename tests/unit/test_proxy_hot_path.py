"""What the call path leaves out or caches: the auth layer of an open proxy, routing-reason labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from autellix.cli import build_parser
from autellix.proxy.app import auth_middleware, create_app, errors_middleware
from autellix.proxy.config import ProxySettings
from autellix.proxy.metrics import MAX_CACHED_REASONS, ProxyMetrics, reason_label
from autellix.settings import load_settings


def proxy_settings(argv: list[str]) -> ProxySettings:
    args = build_parser("proxy").parse_args(["proxy", "--backend", "http://a:1", *argv])
    return load_settings(ProxySettings, args)


@pytest.mark.parametrize(
    ("argv", "guarded"),
    [
        ([], False),  # open, the client's Authorization crosses as it is: nothing to check or strip
        (["--api-key", "k1"], True),
        (["--backend-api-key", "b1"], True),  # the client's Authorization is stripped
        (["--api-key-file", "KEYFILE"], True),  # keys from a file (which may change)
    ],
)
def test_the_auth_layer_is_left_out_only_when_it_has_nothing_to_do(
    argv: list[str], guarded: bool, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("k9\n")
    app = create_app(proxy_settings([str(key_file) if a == "KEYFILE" else a for a in argv]))
    expected = [errors_middleware, auth_middleware] if guarded else [errors_middleware]
    assert list(app.middlewares) == expected


@pytest.mark.parametrize(
    "reason",
    ["short call (12 <= 2048 tokens): least load", "pinned: e1", "", "   ", "prefix hit 3 of 4"],
)
def test_cached_reason_labels_match_the_uncached_ones(reason: str) -> None:
    metrics = ProxyMetrics()
    assert metrics.reason(reason) == reason_label(reason)
    assert metrics.reason(reason) == reason_label(reason)  # from the cache


def test_the_reason_cache_stays_bounded() -> None:
    metrics = ProxyMetrics()
    for n in range(3 * MAX_CACHED_REASONS):
        assert metrics.reason(f"call {n} of a kind") == "call N of a kind"
    assert len(metrics._reasons) <= MAX_CACHED_REASONS
