"""Tables, plots and the "throughput at equal latency" figure of simulated runs and sweeps.

The paper compares systems by the highest arrival rate they sustain at a given program-level token
latency ("Nx throughput", reference.md §2). Here, per workload:

1. The bound is ``factor`` x the lowest latency statistic (mean, P95 or P99 s/token) any system reached
   at any rate, i.e. a multiple of the (nearly) unloaded latency.
2. A system's throughput is the rate at which its latency curve crosses the bound: linear interpolation
   in log(latency) between the last swept rate within the bound and the first one beyond it, as one
   reads it off the paper's latency-vs-rate plots. A run that left programs unfinished is past capacity
   whatever its finished programs say, and has no latency to interpolate with: the crossing is then put
   at the last rate within the bound (conservative). A system within the bound at every swept rate gets
   the highest swept rate, flagged in ``lower_bound`` (its true throughput is higher).
3. Ratios divide ``autellix``'s (or the first program-aware system's) throughput by each other's; a
   system that meets the bound at no swept rate has throughput 0 and no ratio.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["format_table", "throughput_at_latency", "write_report"]

_COLUMNS = (
    "workload",
    "system",
    "rate",
    "lat mean",
    "lat p95",
    "lat p99",
    "done",
    "wait p95",
    "hit",
    "preempt",
)


def _cells(r: Mapping[str, Any]) -> tuple[str, ...]:
    s = r["summary"]
    lat = s["token_latency"]
    return (
        str(r["workload"]),
        str(r["system"]),
        f"{r['rate']:g}",
        f"{lat['mean']:.4f}",
        f"{lat['p95']:.4f}",
        f"{lat['p99']:.4f}",
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


def _crossing(runs: Sequence[Mapping[str, Any]], stat: str, bound: float) -> tuple[float, bool]:
    """(rate where the curve crosses ``bound``, whether it never crossed within the swept rates)."""
    last_rate, last_value = 0.0, 0.0
    for r in sorted(runs, key=lambda r: r["rate"]):
        s = r["summary"]
        value = float(s["token_latency"][stat])
        finished = s["programs_incomplete"] == 0
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
        values = [r["summary"]["token_latency"][stat] for r in runs if r["summary"]["programs_completed"]]
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


def _plot(rows: Sequence[Mapping[str, Any]], workload: str, stat: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for system in dict.fromkeys(r["system"] for r in rows if r["workload"] == workload):
        runs = sorted(
            (r for r in rows if r["workload"] == workload and r["system"] == system), key=lambda r: r["rate"]
        )
        ax.plot(
            [r["rate"] for r in runs],
            [r["summary"]["token_latency"][stat] for r in runs],
            marker="o",
            label=system,
        )
    ax.set_xlabel("arrival rate λ (programs/s)")
    ax.set_ylabel(f"{stat} program token latency (s/token)")
    ax.set_yscale("log")
    ax.set_title(f"{workload}: program-level token latency vs load")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    rows: Sequence[Mapping[str, Any]],
    out_dir: Path,
    stat: str = "mean",
    factor: float = 2.0,
    settings: Mapping[str, Any] | None = None,
) -> list[Path]:
    """``bench.json`` (every run + the throughput figure), ``bench.md`` and one PNG per workload."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = throughput_at_latency(rows, stat, factor)
    paths = [out_dir / "bench.json", out_dir / "bench.md"]
    paths[0].write_text(
        json.dumps({"settings": settings or {}, "throughput": figure, "runs": list(rows)}, indent=2)
    )
    lines = ["# Simulated sweep", "", format_table(rows, markdown=True), ""]
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
