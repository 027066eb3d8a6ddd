"""Calibrated step-time model of a vLLM engine step (reference.md §3) and the engine defaults per GPU.

Theory of operation
-------------------
One engine step runs one forward pass over a batch. Its cost in milliseconds is::

    T = C + (Tw^1.25 + (b*N)^1.25)^0.8 + c_seq*S + c_kv*K + c_attn*A  [+ ar_lat + ar_tok*N  if tp > 1]

1. ``N`` is the number of tokens scheduled in the step (prefill-chunk tokens plus one per decode).
   The middle term is a smooth maximum of the weight-read floor ``Tw`` (small batches are
   memory bound) and the linear matmul cost ``b*N`` (large batches are compute bound).
2. ``S`` is the number of sequences in the batch (per-sequence bookkeeping and sampling).
3. ``K`` is the sum of the context lengths of the *decoding* sequences: decode attention reads
   their whole KV cache (memory bound).
4. ``A`` is the sum over *prefill chunks* of ``chunk * (cached_ctx + chunk / 2)``: causal attention
   of ``chunk`` new tokens against what is already cached plus (on average) half the chunk.
5. Tensor parallelism adds one all-reduce latency and a per-token all-reduce cost per step.
6. A sequence counts as decoding when it schedules exactly one token (vLLM V1 classifies a batch
   entry with query length 1 as a decode, whatever its history); longer chunks are prefills.

The ``unit`` profile costs exactly 1.0 per non-empty step whatever its shape, so hand-worked
schedules in tests read as step counts. Durations leave this module in seconds.

Calibration (reference.md §3): "decode B=1 ctx 1k" is ``N=S=1, K=1000``; "decode B=128 ctx 1k" is
``N=S=128, K=128*1000``; "prefill 2048" is one step with ``N=2048, S=1, K=0, A=2048*(0+2048/2)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["PROFILES", "StepProfile", "StepShape", "get_profile"]


@dataclass(frozen=True, slots=True)
class StepShape:
    """What one engine step computes; the inputs of the step-time model."""

    num_tokens: int  # N: tokens scheduled (prefill chunks + 1 per decode)
    num_seqs: int  # S: sequences in the batch
    decode_context_tokens: int = 0  # K: sum of context lengths of the decoding sequences
    prefill_attention: float = 0.0  # A: sum over prefill chunks of chunk * (cached_ctx + chunk / 2)


@dataclass(frozen=True, slots=True)
class StepProfile:
    """Step-time constants (milliseconds, names as in reference.md §3) and the engine defaults of one
    GPU + model pair."""

    name: str
    C: float  # fixed per-step overhead, ms
    Tw: float  # weight-read floor, ms
    b: float  # ms per scheduled token (compute-bound regime)
    c_seq: float  # ms per sequence in the batch
    c_kv: float  # ms per KV token read by decodes
    c_attn: float  # ms per (prefill token * context token)
    ar_lat: float = 0.0  # all-reduce latency per step, ms (tp > 1 only)
    ar_tok: float = 0.0  # all-reduce cost per token, ms (tp > 1 only)
    tp: int = 1  # tensor-parallel degree
    max_num_batched_tokens: int = 2048  # vLLM's default token budget on this GPU class
    max_num_seqs: int = 256  # vLLM's default running-sequence cap on this GPU class
    num_gpu_blocks: int = 27_000  # KV blocks of 16 tokens at gpu_memory_utilization 0.9 on 80 GB
    fixed_step_s: float | None = None  # if set, every non-empty step costs exactly this (unit profile)

    def step_time_ms(self, shape: StepShape) -> float:
        """Duration of a step of this shape in milliseconds (0 for an empty step)."""
        if shape.num_tokens <= 0:
            return 0.0
        if self.fixed_step_s is not None:
            return self.fixed_step_s * 1000.0
        n = shape.num_tokens
        ms = (
            self.C
            + math.pow(math.pow(self.Tw, 1.25) + math.pow(self.b * n, 1.25), 0.8)
            + self.c_seq * shape.num_seqs
            + self.c_kv * shape.decode_context_tokens
            + self.c_attn * shape.prefill_attention
        )
        if self.tp > 1:
            ms += self.ar_lat + self.ar_tok * n
        return ms

    def step_time_s(self, shape: StepShape) -> float:
        """Duration of a step of this shape in seconds (the unit profile: 1.0 per non-empty step)."""
        if self.fixed_step_s is not None:
            return self.fixed_step_s if shape.num_tokens > 0 else 0.0
        return self.step_time_ms(shape) / 1000.0

    def step_time(self, shape: StepShape) -> float:
        """Alias of :meth:`step_time_s` (seconds)."""
        return self.step_time_s(shape)


# 8B: 128 KiB of KV per token, ~27k blocks of 16 tokens on one 80 GB GPU; 70B at TP4: 320 KiB per
# token, ~460k tokens = 28,750 blocks (reference.md §3). H100 and A100 defaults differ per §4.
PROFILES: Mapping[str, StepProfile] = MappingProxyType(
    {
        "h100-llama3-8b": StepProfile(
            "h100-llama3-8b", C=0.8, Tw=6.4, b=0.0216, c_seq=0.006, c_kv=6.0e-5, c_attn=1.31e-6,
            max_num_batched_tokens=8192, max_num_seqs=1024, num_gpu_blocks=27_000,
        ),
        "a100-llama3-8b": StepProfile(
            "a100-llama3-8b", C=1.0, Tw=9.8, b=0.0667, c_seq=0.008, c_kv=9.0e-5, c_attn=2.8e-6,
            max_num_batched_tokens=2048, max_num_seqs=256, num_gpu_blocks=27_000,
        ),
        "h100-llama3-70b-tp4": StepProfile(
            "h100-llama3-70b-tp4", C=0.8, Tw=14.4, b=0.0555, c_seq=0.006, c_kv=3.7e-5, c_attn=1.64e-6,
            ar_lat=2.4, ar_tok=0.0115, tp=4,
            max_num_batched_tokens=8192, max_num_seqs=1024, num_gpu_blocks=28_750,
        ),
        "a100-llama3-70b-tp4": StepProfile(
            "a100-llama3-70b-tp4", C=1.0, Tw=23.5, b=0.160, c_seq=0.008, c_kv=5.6e-5, c_attn=3.4e-6,
            ar_lat=3.2, ar_tok=0.0208, tp=4,
            max_num_batched_tokens=2048, max_num_seqs=256, num_gpu_blocks=28_750,
        ),
        # Hand-checkable schedules: every non-empty step lasts exactly 1.0.
        "unit": StepProfile(
            "unit", C=0.0, Tw=0.0, b=0.0, c_seq=0.0, c_kv=0.0, c_attn=0.0,
            max_num_batched_tokens=2048, max_num_seqs=256, num_gpu_blocks=27_000, fixed_step_s=1.0,
        ),
    }
)  # fmt: skip


def get_profile(name: str) -> StepProfile:
    """The profile called ``name``; ValueError naming the valid profiles otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        valid = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown step-time profile {name!r}; valid profiles: {valid}") from None
