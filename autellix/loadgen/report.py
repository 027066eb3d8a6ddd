"""Tables, plots and the "throughput at equal latency" figure of simulated runs and sweeps.

The paper compares systems by the highest arrival rate they sustain at a given program-level token
latency ("Nx throughput", reference.md §2). Here, per workload:

1. The bound is ``factor`` x the lowest latency statistic (mean, P95 or P99 s/token) any system reached
   at any rate, i.e. a multiple of the (nearly) unloaded latency.
2. A system's throughput is the rate at which its latency curve crosses the bound: linear interpolation
   in log(latency) between the last swept rate within the bound and the first one beyond it, as one
   reads it off the paper's latency-vs-rate plots. A run that left more than :data:`MAX_UNFINISHED`
   of its programs unfinished is past capacity whatever its finished programs say, and has no latency
   to interpolate with: the crossing is then put at the last rate within the bound (conservative). The
   allowance is for programs no system can finish within the drain: a ShareGPT chat of 80 calls that
   arrives near the end of the arrival window needs ~20 simulated minutes even on an idle engine (seed
   0 at 1 program/s leaves one such program, 1 of 611, unfinished on every system, clairvoyant ones
   included); counting it as overload put every system's crossing at the lowest rate swept. Where the
   runs carry the censored latency (records.py definition 8: the simulation's), that statistic is
   read instead, and no run is set aside: an unfinished program then counts with a lower bound of its
   latency, so a system cannot gain by leaving programs unfinished. The table's ``all mean`` column
   is that mean. A system within the bound at every swept rate gets
   the highest swept rate, flagged in ``lower_bound`` (its true throughput is higher).
3. Ratios divide ``autellix``'s (or the first program-aware system's) throughput by each other's; a
   system that meets the bound at no swept rate has throughput 0 and no ratio.
4. The ladder (``throughput_ladder``): the same figure at several bounds at once, relative ones (2x, 5x,
   10x the unloaded latency) and absolute ones (0.1, 0.25, 0.5 s/token), because a ratio read at one
   bound says little about another: near the knee every system meets a loose bound, far past it none
   meets a tight one. A crossing is *bracketed* when the swept rates just below and just above it were
   both run (the system met the bound at the first and not at the second); a figure that is not
   bracketed is a bound on the true rate, and the table says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Bound",
    "format_ladder",
    "format_table",
    "throughput_at_latency",
    "throughput_ladder",
    "write_report",
]

MAX_UNFINISHED = 0.05  # rule 2: the share of a run's programs the horizon may cut off
DEFAULT_FACTORS = (2.0, 5.0, 10.0)
DEFAULT_ABSOLUTE = (0.1, 0.25, 0.5)

_COLUMNS = (
    "workload",
    "system",
    "rate",
    "lat mean",
    "lat p95",
    "lat p99",
    "all mean",
    "done",
    "wait p95",
    "hit",
    "preempt",
)


def _cells(r: Mapping[str, Any]) -> tuple[str, ...]:
    s = r["summary"]
    lat = s["token_latency"]
    censored = s.get("token_latency_censored")
    return (
        str(r["workload"]),
        str(r["system"]),
        f"{r['rate']:g}",
        f"{lat['mean']:.4f}",
        f"{lat['p95']:.4f}",
        f"{lat['p99']:.4f}",
        f"{censored['mean']:.4f}" if censored else "-",
        f"{s['programs_completed']}/{s['programs']}",
        f"{s['call_queue_wait']['p95']:.2f}",
        f"{s['prefix_cache_hit_rate']:.2f}",
        str(s["preemptions"] + r.get("policy_preemptions", 0)),
    )


def format_table(rows: Sequence[Mapping[str, Any]], markdown: bool = False) -> str:
    """Latency in s/token; ``done`` = completed/arrived programs; ``wait`` = call queue wait, s."""
    body = [_cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(_COLUMNS)] if body else []
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*_COLUMNS), *(fmt.format(*b) for b in body)]) if body else "(no runs)"


def _latency(r: Mapping[str, Any], stat: str) -> float:
    """The run's latency statistic as rule 2 reads it: censored where the run has it."""
    censored = r["summary"].get("token_latency_censored")
    return float((censored or r["summary"]["token_latency"])[stat])


def _crossing(runs: Sequence[Mapping[str, Any]], stat: str, bound: float) -> tuple[float, bool]:
    """(rate where the curve crosses ``bound``, whether it never crossed within the swept rates)."""
    last_rate, last_value = 0.0, 0.0
    for r in sorted(runs, key=lambda r: r["rate"]):
        s = r["summary"]
        value = _latency(r, stat)
        # rule 2: with the censored statistic every program counts, the unfinished with a lower bound
        finished = bool(s.get("token_latency_censored")) or (
            s["programs_incomplete"] <= MAX_UNFINISHED * max(1, int(s["programs"]))
        )
        if finished and value <= bound:
            last_rate, last_value = float(r["rate"]), value
            continue
        if not finished or last_rate == 0.0 or last_value <= 0.0:
            return last_rate, False
        share = (math.log(bound) - math.log(last_value)) / (math.log(value) - math.log(last_value))
        return last_rate + share * (float(r["rate"]) - last_rate), False
    return last_rate, True


def throughput_at_latency(
    rows: Sequence[Mapping[str, Any]], stat: str = "mean", factor: float = 2.0
) -> dict[str, dict[str, Any]]:
    """Per workload: the bound, each system's sustained rate (rule 2) and the ratios (rule 3)."""
    out: dict[str, dict[str, Any]] = {}
    for workload in dict.fromkeys(r["workload"] for r in rows):
        runs = [r for r in rows if r["workload"] == workload]
        values = [_latency(r, stat) for r in runs if r["summary"]["programs_completed"]]
        bound = factor * min(values) if values else 0.0
        best: dict[str, float] = {}
        lower_bound: list[str] = []
        for system in dict.fromkeys(r["system"] for r in runs):
            rate, never_crossed = _crossing([r for r in runs if r["system"] == system], stat, bound)
            best[system] = round(rate, 4)
            if never_crossed:
                lower_bound.append(system)
        ref = next((name for name in best if name.startswith("autellix")), None)
        ratios = {
            name: round(best[ref] / rate, 3)
            for name, rate in best.items()
            if ref and rate > 0 and name != ref
        }
        out[workload] = {
            "stat": stat,
            "bound": bound,
            "throughput": best,
            "lower_bound": lower_bound,
            "reference": ref,
            "ratios": ratios,
        }
    return out


Bound = tuple[str, float]  # (label, s/token)


def ladder_bounds(
    rows: Sequence[Mapping[str, Any]],
    stat: str = "mean",
    factors: Sequence[float] = DEFAULT_FACTORS,
    absolute: Sequence[float] = DEFAULT_ABSOLUTE,
) -> list[Bound]:
    """Rule 4's bounds for one workload's runs: ``factor`` x the lowest latency seen, then absolutes."""
    values = [_latency(r, stat) for r in rows if r["summary"]["programs_completed"]]
    unloaded = min(values) if values else 0.0
    return [(f"{f:g}x", f * unloaded) for f in factors] + [(f"{a:g} s/tok", a) for a in absolute]


def throughput_ladder(
    rows: Sequence[Mapping[str, Any]],
    stat: str = "mean",
    factors: Sequence[float] = DEFAULT_FACTORS,
    absolute: Sequence[float] = DEFAULT_ABSOLUTE,
    reference: str = "autellix",
) -> dict[str, dict[str, Any]]:
    """Per workload and bound: each system's sustained rate, whether it is bracketed, and the
    reference system's ratio to every other (rule 4)."""
    out: dict[str, dict[str, Any]] = {}
    for workload in dict.fromkeys(r["workload"] for r in rows):
        runs = [r for r in rows if r["workload"] == workload]
        systems = list(dict.fromkeys(r["system"] for r in runs))
        rates = sorted({float(r["rate"]) for r in runs})
        ladder: list[dict[str, Any]] = []
        for label, bound in ladder_bounds(runs, stat, factors, absolute):
            throughput: dict[str, float] = {}
            bracketed: dict[str, bool] = {}
            for system in systems:
                own = [r for r in runs if r["system"] == system]
                rate, never = _crossing(own, stat, bound)
                throughput[system] = round(rate, 4)
                bracketed[system] = not never and rate > 0.0 and rate >= rates[0]
            ref = reference if reference in throughput else None
            ratios = {
                name: round(throughput[ref] / value, 3)
                for name, value in throughput.items()
                if ref is not None and name != ref and value > 0
            }
            ladder.append(
                {
                    "label": label,
                    "bound": bound,
                    "throughput": throughput,
                    "bracketed": bracketed,
                    "ratios": ratios,
                }
            )
        out[workload] = {"stat": stat, "reference": reference, "rates": rates, "ladder": ladder}
    return out


def format_ladder(ladder: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: one row per (workload, bound): each system's sustained rate (``>`` not bracketed:
    within the bound at the highest rate swept; ``<`` not even at the lowest), then the reference's
    ratio to each."""
    lines: list[str] = []
    for workload, fig in ladder.items():
        entries = fig["ladder"]
        if not entries:
            continue
        systems = list(entries[0]["throughput"])
        ref = fig["reference"]
        others = [s for s in systems if s != ref]
        head = ["workload", "bound", "s/token", *systems, *(f"{ref} / {s}" for s in others)]
        if not lines:
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for entry in entries:
            cells = [workload, entry["label"], f"{entry['bound']:.4f}"]
            for system in systems:
                rate = entry["throughput"][system]
                mark = "" if entry["bracketed"][system] else (">" if rate > 0 else "<")
                cells.append(f"{mark}{rate:g}" if rate > 0 else f"<{fig['rates'][0]:g}")
            cells += [_ratio_cell(entry, ref, s) for s in others]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio_cell(entry: Mapping[str, Any], ref: str, other: str) -> str:
    """A ratio with what the grid leaves open: ``>=`` when only the reference ran off the grid's top,
    ``<=`` when only the other did (or the reference is under its bottom), ``-`` when both did."""
    if other not in entry["ratios"] or ref not in entry["bracketed"]:
        return "-"
    ours, theirs = entry["bracketed"][ref], entry["bracketed"][other]
    if not ours and not theirs:
        return "-"
    if ours and theirs:
        return f"{entry['ratios'][other]:.2f}x"
    mark = ">=" if not ours and entry["throughput"][ref] > 0 else "<="
    return f"{mark}{entry['ratios'][other]:.2f}x"


def _plot(rows: Sequence[Mapping[str, Any]], workload: str, stat: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hit) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    for system in dict.fromkeys(r["system"] for r in rows if r["workload"] == workload):
        runs = sorted(
            (r for r in rows if r["workload"] == workload and r["system"] == system), key=lambda r: r["rate"]
        )
        rates = [r["rate"] for r in runs]
        ax.plot(rates, [_latency(r, stat) for r in runs], marker="o", label=system)
        hit.plot(rates, [r["summary"]["prefix_cache_hit_rate"] for r in runs], marker=".", label=system)
    ax.set_xlabel("arrival rate λ (programs/s)")
    ax.set_ylabel(f"{stat} program token latency (s/token)\nunfinished programs as lower bounds")
    ax.set_yscale("log")
    ax.set_title(f"{workload}: program-level token latency vs load")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    hit.set_xlabel("arrival rate λ (programs/s)")
    hit.set_ylabel("prefix-cache hit rate")
    hit.set_ylim(0.0, 1.0)
    hit.set_title("prefix-cache hits")
    hit.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    rows: Sequence[Mapping[str, Any]],
    out_dir: Path,
    stat: str = "mean",
    factor: float = 2.0,
    settings: Mapping[str, Any] | None = None,
    *,
    factors: Sequence[float] = DEFAULT_FACTORS,
    absolute: Sequence[float] = DEFAULT_ABSOLUTE,
    reference: str = "autellix",
) -> list[Path]:
    """``bench.json`` (every run, the throughput figure and the ladder), ``bench.md`` and one PNG
    per workload."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = throughput_at_latency(rows, stat, factor)
    ladder = throughput_ladder(rows, stat, factors, absolute, reference)
    paths = [out_dir / "bench.json", out_dir / "bench.md"]
    document = {"settings": settings or {}, "throughput": figure, "ladder": ladder, "runs": list(rows)}
    paths[0].write_text(json.dumps(document, indent=2))
    lines = ["# Simulated sweep", "", format_table(rows, markdown=True), ""]
    lines += [f"## Throughput at equal {stat} latency (sustained programs/s)", "", format_ladder(ladder), ""]
    for workload, fig in figure.items():
        lines.append(
            f"- **{workload}**: {stat} latency bound {fig['bound']:.4f} s/token; sustained rate "
            + ", ".join(f"{k} {v:g}/s" for k, v in fig["throughput"].items())
            + (
                "; " + ", ".join(f"{fig['reference']} / {k} = {v:.2f}x" for k, v in fig["ratios"].items())
                if fig["ratios"]
                else ""
            )
        )
        png = out_dir / f"latency_{workload}.png"
        _plot(rows, workload, stat, png)
        paths.append(png)
    paths[1].write_text("\n".join(lines) + "\n")
    return paths
