"""API keys: who may call the proxy (or a sidecar), and which credential travels upstream.

Theory of operation
-------------------
Plain data in, plain data out, but for ``read_key_file`` at the end, the one helper that reads a file.
The shells (proxy/app.py, engine_adapters/sidecar.py) read the headers, answer the 401 and swap the
key set; this module decides. It sits beside both shells because both check keys. The behaviour follows what
operators know from vLLM (``--api-key``), vllm-router and LiteLLM's master key, and RFC 6750 (Bearer).

1. Keys. Any number of keys are accepted at once, so a key is rotated without downtime: add the new
   one, move the clients, remove the old one. A key is visible ASCII without ``,`` (the separator of
   ``AUTELLIX_API_KEY=k1,k2``), which also makes it a valid header value. No key configured: the
   service is open, as today and as vLLM without ``--api-key``.
2. Credential. Only ``Authorization: Bearer <key>`` (the scheme is case-insensitive, RFC 7235 §2.1),
   which every OpenAI SDK and OpenAI-compatible client sends. ``x-api-key`` (Anthropic's header) is
   not accepted: the proxy serves OpenAI's API only, vLLM accepts Bearer only, and a second header
   doubles the places a key can leak (log redactors mask ``Authorization`` but rarely custom headers).
   More than one ``Authorization`` header is rejected rather than guessed at.
3. Comparison. The presented key's SHA-256 digest is compared with ``hmac.compare_digest`` against the
   digest of *every* configured key, without stopping at a match: the time taken depends neither on
   where a guess differs, nor on which key matched, nor (all digests are 32 bytes) on the key's length.
   Only digests are kept, so no repr, log line or crash dump of the key set shows a key.
4. Exemptions. ``GET``/``HEAD`` of ``/health``, ``/ready`` and ``/metrics`` stay open: probes and
   Prometheus scrapers carry no credentials (vLLM leaves them open too). Everything else needs a key,
   unknown paths included, so that an anonymous caller cannot map the routes by their 404s.
5. Rejection. 401 with OpenAI's error shape and code ``invalid_api_key`` (what OpenAI answers for a bad
   key, and what makes the ``openai`` SDK raise ``AuthenticationError``), and ``WWW-Authenticate:
   Bearer realm=...``, with ``error="invalid_token"`` only when a credential was presented (RFC 6750
   §3.1). The message never repeats what was presented.
6. Upstream. When the service checks keys, the client's ``Authorization`` is its credential and is
   never forwarded. A configured backend key is sent instead (also when the service is open); with
   neither, the client's header passes through unchanged, so an engine that checks client keys keeps
   working behind an open proxy.
7. Key files. One key per line; blank lines and ``#`` comments are skipped and surrounding whitespace
   is stripped (a Secret file often ends with a newline). A file without a key is an error: an
   operator who names a key file wants authentication, so it fails closed. A reload that fails keeps
   the keys in force (:class:`KeyRing`), and the problem is reported once, not at every reload.
8. Exposure. A sidecar is the one service whose callers must be the proxy: a caller that reaches it
   directly skips the proxy's program table and can send any priority context. So a sidecar that
   listens beyond loopback (:func:`is_loopback_host` is False) refuses to start without a key, unless
   the operator says ``--insecure-no-auth`` (a NetworkPolicy, say, does the job instead).
9. Key ids. An accepted key is named by :func:`key_id`, the first 16 hex digits of its SHA-256
   digest: stable across restarts and replicas (every replica computes the same), never the key, and
   what the proxy's tenants are named after (proxy/tenants.py). Rotating a key changes its id.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
OPEN_METHODS = frozenset({"GET", "HEAD"})
REALM = "autellix"
MAX_KEY_LENGTH = 4096
KEY_ID_LENGTH = 16  # hex digits: 64 bits, no collision among any realistic number of keys

Verdict = Literal["open", "accepted", "missing", "malformed", "invalid"]


def check_key(key: str) -> str:
    """Rule 1: a usable key, or ValueError (whose message never contains the key)."""
    if not key:
        raise ValueError("an API key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"an API key must be at most {MAX_KEY_LENGTH} characters")
    if not all("!" <= char <= "~" and char != "," for char in key):
        raise ValueError("an API key must be visible ASCII characters without spaces or commas")
    return key


def parse_key_list(value: Any) -> list[str]:
    """Keys from a flag list, a YAML list or string, or the environment (``k1,k2`` or a JSON list).

    A comma separates keys wherever it appears (``--api-key k1,k2`` too). Empty items are dropped, so
    ``AUTELLIX_API_KEY=""`` (an empty optional Secret) means no key.
    """
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("a JSON list of API keys is not valid JSON") from None
        else:
            value = [text]
    if not isinstance(value, list | tuple):
        raise ValueError("API keys must be a string or a list of strings")
    keys: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError("API keys must be strings")
        keys.extend(check_key(key.strip()) for key in item.split(",") if key.strip())
    return keys


def parse_key_file(text: str, source: str) -> tuple[str, ...]:
    """Rule 7: the keys of a key file's text; ValueError names the line, never its content."""
    keys: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(check_key(line))
        except ValueError as exc:
            raise ValueError(f"{source}, line {number}: {exc}") from None
    if not keys:
        raise ValueError(f"{source} holds no API key")
    return tuple(keys)


def requires_key(method: str, path: str) -> bool:
    """Rule 4: whether a request must carry a key (when keys are configured at all)."""
    return not (method.upper() in OPEN_METHODS and path in OPEN_PATHS)


def is_loopback_host(host: str) -> bool:
    """Rule 8: whether binding ``host`` keeps a service reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name or the all-interfaces address "": reachable from outside


def forwards_client_authorization(checks_keys: bool, backend_key: str | None) -> bool:
    """Rule 6: the client's ``Authorization`` reaches the upstream only if nobody else owns it."""
    return not checks_keys and backend_key is None


def bearer(key: str) -> str:
    """The ``Authorization`` value that presents ``key``."""
    return f"Bearer {key}"


def _digest(text: str) -> bytes:
    # A non-ASCII credential can never match (keys are ASCII) but must still cost one comparison.
    return hashlib.sha256(text.encode("utf-8", "replace")).digest()


def key_id(key: str) -> str:
    """Rule 9: the stable, non-secret name of a key."""
    return _digest(key).hex()[:KEY_ID_LENGTH]


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What :meth:`ApiKeys.check` decided about one request."""

    verdict: Verdict
    key_id: str | None = None  # rule 9, of the accepted key

    @property
    def allowed(self) -> bool:
        return self.verdict in ("open", "accepted")

    @property
    def message(self) -> str:
        """Rule 5: the 401's message (worded as OpenAI's, never echoing the credential)."""
        if self.verdict == "missing":
            return "Missing API key: send it as 'Authorization: Bearer <key>'."
        if self.verdict == "malformed":
            return "Malformed Authorization header: expected exactly one 'Authorization: Bearer <key>'."
        if self.verdict == "invalid":
            return "Incorrect API key provided."
        return ""

    @property
    def challenge(self) -> str:
        """Rule 5: the ``WWW-Authenticate`` value of the 401."""
        if self.verdict == "missing":
            return f'Bearer realm="{REALM}"'
        return f'Bearer realm="{REALM}", error="invalid_token"'


OPEN = AuthResult("open")


@dataclass(frozen=True, slots=True, repr=False)
class ApiKeys:
    """The accepted keys, as digests only (rule 3); empty = open."""

    digests: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, keys: Iterable[str]) -> ApiKeys:
        unique = dict.fromkeys(check_key(key) for key in keys)
        return cls(tuple(_digest(key) for key in unique))

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def merged(self, other: ApiKeys) -> ApiKeys:
        return ApiKeys(tuple(dict.fromkeys((*self.digests, *other.digests))))

    def __len__(self) -> int:
        return len(self.digests)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self.digests)} key(s))"

    def matches(self, presented: str) -> bool:
        """Rule 3: compare with every key, never stopping early."""
        return self._matches(_digest(presented))

    def _matches(self, digest: bytes) -> bool:
        found = False
        for key_digest in self.digests:
            found |= hmac.compare_digest(digest, key_digest)
        return found

    def check(self, authorization: Sequence[str]) -> AuthResult:
        """Rules 2 and 3 over the request's ``Authorization`` header values (all of them)."""
        if not self.digests:
            return OPEN
        if not authorization:
            return AuthResult("missing")
        if len(authorization) > 1:
            return AuthResult("malformed")
        scheme, _, credential = authorization[0].strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return AuthResult("malformed")
        digest = _digest(credential)
        if not self._matches(digest):
            return AuthResult("invalid")
        return AuthResult("accepted", digest.hex()[:KEY_ID_LENGTH])


@dataclass(frozen=True, slots=True)
class Reload:
    """What one re-read of the key file changed; the shell logs it."""

    changed: bool  # the key set in force is a new one
    warning: str | None = None  # a new problem with the file (the keys in force stay)


@dataclass(slots=True)
class KeyRing:
    """The keys in force: the fixed ones (flags, environment, YAML) and the key file's (rule 7)."""

    fixed: ApiKeys
    keys: ApiKeys
    file_error: str | None = None

    @classmethod
    def of(cls, fixed: Iterable[str], from_file: Iterable[str] = ()) -> KeyRing:
        fixed_keys = ApiKeys.of(fixed)
        return cls(fixed_keys, fixed_keys.merged(ApiKeys.of(from_file)))

    def reload(self, from_file: tuple[str, ...] | ValueError) -> Reload:
        """Take the file's new keys, or keep the keys in force when the file could not be used."""
        if isinstance(from_file, ValueError):
            problem = str(from_file)
            new = problem != self.file_error
            self.file_error = problem
            return Reload(False, problem if new else None)
        self.file_error = None
        keys = self.fixed.merged(ApiKeys.of(from_file))
        if keys.digests == self.keys.digests:
            return Reload(False)
        self.keys = keys
        return Reload(True)


def read_key_file(path: str) -> tuple[str, ...]:
    """The keys of an API key file (auth.py rule 7); ValueError names the file, never a key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"cannot read API key file {path!r}: {reason}") from None
    return parse_key_file(text, f"API key file {path!r}")


# --- validators of the settings models (proxy/config.py, engine_adapters/config.py share them) ------


def optional_key(value: Any) -> Any:
    """An outbound key setting (``--backend-api-key``, ``--engine-api-key``): blank is none."""
    if isinstance(value, str):
        value = value.strip()
        return check_key(value) if value else None
    return value


def key_file_setting(value: Any) -> Any:
    """``--api-key-file``: blank is none; a missing, unreadable or empty file stops the start-up."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        read_key_file(value)
    return value
