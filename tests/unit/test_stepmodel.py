"""The calibrated step-time model reproduces reference.md §3."""

from __future__ import annotations

import math

import pytest

from autellix.simulator.stepmodel import PROFILES, StepProfile, StepShape, get_profile


def decode(batch: int, ctx: int) -> StepShape:
    return StepShape(num_tokens=batch, num_seqs=batch, decode_context_tokens=batch * ctx)


def prefill(tokens: int) -> StepShape:
    return StepShape(num_tokens=tokens, num_seqs=1, prefill_attention=tokens * (0 + tokens / 2))


# reference.md §3 "Expected outputs" (ms); "1k" and "8k" contexts are 1000 and 8000 tokens.
EXPECTED_8B = [
    ("h100-llama3-8b", decode(1, 1000), 7.3),
    ("a100-llama3-8b", decode(1, 1000), 10.9),
    ("h100-llama3-8b", decode(128, 1000), 17.4),
    ("a100-llama3-8b", decode(128, 1000), 29.5),
    ("h100-llama3-8b", decode(64, 8000), 39.0),
    ("a100-llama3-8b", decode(64, 8000), 60.1),
    ("h100-llama3-8b", prefill(2048), 50.9),
    ("a100-llama3-8b", prefill(2048), 148.0),
    ("h100-llama3-8b", prefill(8192), 224.0),
    ("a100-llama3-8b", prefill(8192), 644.0),
]


@pytest.mark.parametrize(("name", "shape", "expected_ms"), EXPECTED_8B)
def test_8b_profiles_reproduce_reference_outputs(name: str, shape: StepShape, expected_ms: float) -> None:
    profile = get_profile(name)
    assert profile.step_time_ms(shape) == pytest.approx(expected_ms, rel=0.03)
    assert profile.step_time_s(shape) == pytest.approx(profile.step_time_ms(shape) / 1000.0)


def formula_ms(p: StepProfile, shape: StepShape) -> float:
    n = shape.num_tokens
    ms = (
        p.C
        + (p.Tw**1.25 + (p.b * n) ** 1.25) ** 0.8
        + p.c_seq * shape.num_seqs
        + p.c_kv * shape.decode_context_tokens
        + p.c_attn * shape.prefill_attention
    )
    return float(ms + (p.ar_lat + p.ar_tok * n if p.tp > 1 else 0.0))


@pytest.mark.parametrize("name", ["h100-llama3-70b-tp4", "a100-llama3-70b-tp4"])
@pytest.mark.parametrize(
    "shape", [decode(1, 1000), decode(128, 1000), decode(64, 8000), prefill(2048), prefill(8192)]
)
def test_70b_profiles_follow_the_formula_with_tp_terms(name: str, shape: StepShape) -> None:
    profile = get_profile(name)
    assert profile.tp == 4 and profile.ar_lat > 0 and profile.ar_tok > 0
    assert profile.step_time_ms(shape) == pytest.approx(formula_ms(profile, shape), rel=1e-12)
    # The all-reduce terms are really added: the same constants without TP are cheaper by exactly them.
    no_tp = StepProfile("x", profile.C, profile.Tw, profile.b, profile.c_seq, profile.c_kv, profile.c_attn)
    extra = profile.step_time_ms(shape) - no_tp.step_time_ms(shape)
    assert extra == pytest.approx(profile.ar_lat + profile.ar_tok * shape.num_tokens)


def test_70b_expected_values_from_formula() -> None:
    # Worked by hand from reference.md §3: A100 70B TP4, decode B=1 ctx 1k.
    p = get_profile("a100-llama3-70b-tp4")
    by_hand = 1.0 + (23.5**1.25 + 0.16**1.25) ** 0.8 + 0.008 + 5.6e-5 * 1000 + 3.2 + 0.0208
    assert p.step_time_ms(decode(1, 1000)) == pytest.approx(by_hand)
    assert 27.0 < by_hand < 29.0
    # 70B is slower than 8B on the same GPU for every shape.
    for shape in (decode(1, 1000), decode(128, 1000), prefill(2048)):
        assert p.step_time_ms(shape) > get_profile("a100-llama3-8b").step_time_ms(shape)
        assert get_profile("h100-llama3-70b-tp4").step_time_ms(shape) > get_profile(
            "h100-llama3-8b"
        ).step_time_ms(shape)


@pytest.mark.parametrize("name", [n for n in PROFILES if n != "unit"])
def test_step_time_is_monotone_in_every_input(name: str) -> None:
    p = get_profile(name)
    base = StepShape(num_tokens=256, num_seqs=64, decode_context_tokens=64_000, prefill_attention=1e6)
    t0 = p.step_time_ms(base)
    for bigger in (
        StepShape(512, 64, 64_000, 1e6),
        StepShape(256, 128, 64_000, 1e6),
        StepShape(256, 64, 128_000, 1e6),
        StepShape(256, 64, 64_000, 2e6),
    ):
        assert p.step_time_ms(bigger) > t0
    # Small batches sit on the weight-read floor: doubling 1 -> 2 tokens costs almost nothing.
    one = p.step_time_ms(decode(1, 0))
    assert p.step_time_ms(decode(2, 0)) - one < 0.005 * one
    # Large prefills are compute bound: close to linear in tokens.
    ratio = p.step_time_ms(StepShape(8192, 1)) / p.step_time_ms(StepShape(4096, 1))
    assert 1.8 < ratio < 2.05


def test_h100_is_faster_than_a100() -> None:
    for shape in (decode(1, 1000), decode(128, 1000), decode(64, 8000), prefill(2048), prefill(8192)):
        assert get_profile("h100-llama3-8b").step_time_ms(shape) < get_profile("a100-llama3-8b").step_time_ms(
            shape
        )


@pytest.mark.parametrize("shape", [decode(1, 10), decode(256, 4000), prefill(8192), StepShape(1, 1)])
def test_unit_profile_costs_one_per_step(shape: StepShape) -> None:
    assert get_profile("unit").step_time_s(shape) == 1.0
    assert get_profile("unit").step_time(shape) == 1.0


@pytest.mark.parametrize("name", list(PROFILES))
def test_empty_step_costs_nothing(name: str) -> None:
    assert get_profile(name).step_time_s(StepShape(0, 0)) == 0.0


@pytest.mark.parametrize(
    ("name", "tokens", "seqs", "blocks"),
    [
        ("a100-llama3-8b", 2048, 256, 27_000),
        ("h100-llama3-8b", 8192, 1024, 27_000),
        ("a100-llama3-70b-tp4", 2048, 256, 28_750),
        ("h100-llama3-70b-tp4", 8192, 1024, 28_750),
    ],
)
def test_engine_defaults_per_profile(name: str, tokens: int, seqs: int, blocks: int) -> None:
    p = get_profile(name)
    assert (p.max_num_batched_tokens, p.max_num_seqs, p.num_gpu_blocks) == (tokens, seqs, blocks)
    assert p.name == name


def test_unknown_profile_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"valid profiles: .*a100-llama3-8b.*unit"):
        get_profile("tpu-v5")


def test_profiles_are_frozen() -> None:
    p = get_profile("a100-llama3-8b")
    with pytest.raises(AttributeError):
        p.C = 2.0  # type: ignore[misc]
    assert math.isfinite(p.step_time_s(prefill(32768)))
