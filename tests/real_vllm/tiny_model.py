"""Tiny Llama models with random weights, made on this machine for the real-vLLM tier (no download).

A model is a folder vLLM can serve: a byte-level BPE tokenizer trained with ``tokenizers`` on generated
text (any input encodes, nothing is unknown), a chat template, and a ``LlamaForCausalLM`` built from a
``LlamaConfig`` with seeded random weights, saved as safetensors. Its text is gibberish; what the tests
need is a real engine doing real work per token.

Folders are cached under ``<cache>/<name>-<hash of the spec>`` and built at most once per spec (a lock
file serialises concurrent builders; a build goes to a temporary folder renamed into place), so reruns
of the tier start at once. The heavy libraries are imported inside the builder only: this module is
imported (and type-checked) where they are not installed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BUILDER_VERSION = 1  # bump when the folder layout or the tokenizer recipe changes

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_CORPUS_WORDS = (
    "the agent calls a tool and reads the result then plans the next step of its program while the "
    "engine schedules calls by attained service short programs finish first long programs wait search "
    "tree node value score answer question context prompt token cache block prefix hit miss queue "
    "level quantum batch decode prefill latency throughput sidecar proxy route engine pin least used "
    "alpha beta gamma delta one two three four five six seven eight nine ten hello world python code"
)


@dataclass(frozen=True, slots=True)
class TinyModelSpec:
    """Shape of one model; CPU attention in vLLM needs head_dim in {32, 64, 80, 96, 112, 128, ...}."""

    name: str
    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def digest(self) -> str:
        text = json.dumps({**asdict(self), "builder": BUILDER_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def approx_parameters(self) -> int:
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        kv = self.num_key_value_heads * self.head_dim
        per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
        return 2 * v * h + self.num_hidden_layers * per_layer + h


# ~150k parameters: answers in milliseconds (API surface, parity, plumbing).
TINY = TinyModelSpec("autellix-tiny")
# ~20M parameters: tens of milliseconds per decode step on 2 cores, so the engine is the bottleneck and
# queueing order is visible in completion order.
SMALL = TinyModelSpec(
    "autellix-small",
    hidden_size=512,
    intermediate_size=1408,
    num_hidden_layers=6,
    num_attention_heads=8,
    num_key_value_heads=8,
    # Room for calls that run until the test hangs them up: 16k tokens are minutes at the ~130 tokens/s
    # seen here and still ~1 min on a machine several times faster (KV: ~24 KiB a token, 0.4 GiB).
    max_position_embeddings=16384,
)


def corpus(seed: int, lines: int = 4000) -> Iterator[str]:
    """Seeded lines of words for training the tokenizer (the same seed, the same tokenizer)."""
    words = _CORPUS_WORDS.split()
    rng = random.Random(seed)
    for _ in range(lines):
        yield " ".join(rng.choice(words) for _ in range(rng.randint(4, 24)))


def _build_tokenizer(spec: TinyModelSpec, folder: Path) -> Any:
    tk = importlib.import_module("tokenizers")
    transformers = importlib.import_module("transformers")
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=[BOS, EOS, PAD, *ROLE_TOKENS],
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(spec.seed), trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        chat_template=CHAT_TEMPLATE,
        model_max_length=spec.max_position_embeddings,
    )
    fast.save_pretrained(str(folder))
    return fast


def _build_weights(spec: TinyModelSpec, tokenizer: Any, folder: Path) -> None:
    torch = importlib.import_module("torch")
    transformers = importlib.import_module("transformers")
    torch.manual_seed(spec.seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
    )
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(str(folder), safe_serialization=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_model(spec: TinyModelSpec, cache: Path) -> Path:
    """The model folder for ``spec`` under ``cache``, built now if no finished build is there."""
    folder = cache / f"{spec.name}-{spec.digest()}"
    done = folder / ".autellix-built"
    if done.exists():
        return folder
    with _locked(cache / f".{spec.name}.lock"):
        if done.exists():
            return folder
        staging = cache / f".{folder.name}.building"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        tokenizer = _build_tokenizer(spec, staging)
        _build_weights(spec, tokenizer, staging)
        (staging / ".autellix-built").write_text(json.dumps(asdict(spec), sort_keys=True))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder
