"""Just enough PromQL and Prometheus text format to check dashboards and alerts against real /metrics.

Not a PromQL parser: it removes what cannot name a metric (strings, label matchers, ranges, grouping
clauses, numbers, Grafana variables), then every identifier that is not a keyword and not followed by
``(`` is a metric name. That is exact for the expressions dashboards and alerts use (selectors,
functions, aggregations, binary operators).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_VARIABLE = re.compile(r"\$\{?\w+\}?|\[\[\w+\]\]")
_NUMBER = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
    | {"offset", "inf", "nan", "atan2"}
)
_RATED = re.compile(r"\b(?:rate|irate|increase|resets|deriv)\s*\(\s*([A-Za-z_:][A-Za-z0-9_:]*)")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*)\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.S)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _without_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads: ``{"b"}`` for ``histogram_quantile(0.9, rate(b[5m]))``."""
    text = _without_strings(expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(0)
        rest = text[match.end() :].lstrip()
        if name in _KEYWORDS or rest.startswith("("):
            continue
        names.add(name)
    return names


def rated_metrics(expr: str) -> set[str]:
    """Metrics passed to a function that expects a counter (rate, irate, increase, ...)."""
    return {m.group(1) for m in _RATED.finditer(_without_strings(expr))}


def used_labels(expr: str) -> set[str]:
    """Label names an expression matches on or groups by."""
    text = _without_strings(expr)
    labels = {m.group(1) for sel in _SELECTOR.finditer(text) for m in _MATCHER_LABEL.finditer(sel.group(2))}
    for clause in _GROUPING.finditer(text):
        labels.update(part.strip() for part in clause.group(2).split(",") if part.strip())
    return labels - {"__name__"}


def variable_query_metrics(query: str) -> set[str]:
    """Metrics a Grafana variable query reads (``label_values(metric{...}, label)``, ``query_result(e)``)."""
    found = _LABEL_VALUES.match(query)
    if found:
        inner = found.group(1)
        head, comma, _label = inner.rpartition(",")
        return metric_names(head) if comma else set()
    found = _QUERY_RESULT.match(query)
    if found:
        return metric_names(found.group(1))
    return metric_names(query)


@dataclass(slots=True)
class Exposition:
    """What some /metrics pages expose: sample names, their label names, and family types."""

    samples: dict[str, set[str]] = field(default_factory=dict)  # sample name -> label names seen
    types: dict[str, str] = field(default_factory=dict)  # family name (as in # TYPE) -> type

    def add(self, text: str) -> None:
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                self.types[name] = kind.strip()
                continue
            if not line or line.startswith("#"):
                continue
            head = line.rsplit(" ", 1)[0] if "}" not in line else line[: line.rindex("}") + 1]
            name, _, labels = head.partition("{")
            self.samples.setdefault(name.strip(), set()).update(_MATCHER_LABEL.findall(labels))

    def names(self) -> set[str]:
        """Every name a query may use: samples, families, and the series of histograms."""
        known = set(self.samples) | set(self.types)
        for name, kind in self.types.items():
            if kind == "histogram":
                known.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
        return known

    def is_counter_like(self, name: str) -> bool:
        """A counter, or a histogram's bucket/sum/count series (what rate() accepts)."""
        if self.types.get(name) == "counter" or self.types.get(name.removesuffix("_total")) == "counter":
            return True
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and self.types.get(name.removesuffix(suffix)) == "histogram":
                return True
        return False

    def labels_of(self, name: str) -> set[str] | None:
        """Label names seen on a metric's samples (None: no sample seen, so unknown)."""
        seen = self.samples.get(name)
        if seen is None:
            return None
        labels = set(seen)
        if name.endswith("_bucket"):
            labels.add("le")
        return labels


def missing_metrics(expressions: Iterable[str], exposition: Exposition) -> list[str]:
    """``"name (in: expr)"`` for every metric an expression reads that the exposition lacks."""
    known = exposition.names()
    return sorted(
        f"{name}  (in: {expr})" for expr in expressions for name in metric_names(expr) if name not in known
    )
