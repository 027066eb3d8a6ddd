"""The PromQL helpers the dashboard checks rely on: they must find every metric and nothing else."""

from __future__ import annotations

import pytest

from tests.deploy.promql import (
    Exposition,
    metric_names,
    missing_metrics,
    rated_metrics,
    used_labels,
    variable_query_metrics,
)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum by (route, status) (rate(a_total{namespace=~"$namespace"}[$__rate_interval]))', {"a_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket[5m])))", {"x_seconds_bucket"}),
        ("sum(rate(a_sum[5m])) / sum(rate(a_count[5m]))", {"a_sum", "a_count"}),
        (
            'rate(vllm:prefix_cache_hits_total{pod=~"a"}[1m]) / rate(vllm:prefix_cache_queries_total[1m])',
            {"vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"},
        ),
        ("count(max by (engine) (h) == 1)", {"h"}),
        ("a / on (pod) group_left (x) b", {"a", "b"}),
        ("a > 1e3 and b offset 5m unless c bool", {"a", "b", "c"}),
        ('label_replace(m, "dst", "$1 by (x)", "src", "(.*)")', {"m"}),
        ("x / scalar(sum(rate(y[5m])))", {"x", "y"}),
        ("max_over_time(g[10m:1m]) > inf", {"g"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_rated_metrics_and_labels() -> None:
    expr = 'sum by (engine, reason) (rate(d_total{ns=~"x", reason!="y"}[5m])) / ignoring (reason) g'
    assert rated_metrics(expr) == {"d_total"}
    assert used_labels(expr) == {"engine", "reason", "ns"}


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("label_values(autellix_proxy_active_programs, namespace)", {"autellix_proxy_active_programs"}),
        ('label_values(w{namespace=~"$namespace"}, pod)', {"w"}),
        ("label_values(namespace)", set()),
        ("query_result(topk(3, q))", {"q"}),
    ],
)
def test_variable_queries(query: str, names: set[str]) -> None:
    assert variable_query_metrics(query) == names


EXPOSITION = """\
# HELP c_total A counter.
# TYPE c_total counter
c_total{route="/v1/x",status="200"} 3.0
# TYPE h_seconds histogram
h_seconds_bucket{le="0.1"} 1.0
h_seconds_count 1.0
h_seconds_sum 0.05
# TYPE g gauge
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
"""


def test_exposition_knows_samples_families_and_histogram_series() -> None:
    exposition = Exposition()
    exposition.add(EXPOSITION)
    assert {
        "c_total",
        "h_seconds_bucket",
        "h_seconds_sum",
        "g",
        "vllm:kv_cache_usage_perc",
    } <= exposition.names()
    assert exposition.labels_of("c_total") == {"route", "status"}
    assert exposition.labels_of("h_seconds_bucket") == {"le"}
    assert exposition.labels_of("g") is None  # a family without samples: labels unknown
    assert exposition.is_counter_like("c_total") and exposition.is_counter_like("h_seconds_bucket")
    assert not exposition.is_counter_like("g")
    assert not exposition.is_counter_like("vllm:kv_cache_usage_perc")


def test_missing_metrics_names_an_invented_metric() -> None:
    exposition = Exposition()
    exposition.add(EXPOSITION)
    assert missing_metrics(["rate(c_total[5m])", "g"], exposition) == []
    assert missing_metrics(["rate(c_made_up_total[5m]) / g"], exposition) == [
        "c_made_up_total  (in: rate(c_made_up_total[5m]) / g)"
    ]
