"""Tenants and signed program ids: whose program an id names (issue 13 part 3).

Theory of operation
-------------------
Plain data in, plain data out; randomness (a new id's token, a random secret) is passed in by the
shells (app.py, calls.py, passthrough.py), which read the tenant the auth middleware found.

1. Tenant. With API keys on, a request belongs to the key it was accepted with, named by the key's id
   (auth.py rule 9: a SHA-256 prefix, never the key). With keys off there is one tenant, ``""``, and
   every id is used exactly as today.
2. Namespacing. The table id of a client's program id is ``<key id>/<id>``: the program table (memory
   and Redis keys alike), this replica's mirror, routing and the sidecar's queue (the
   ``X-Autellix-Program-Id`` header) all see the table id, the client only its own id. Because *every*
   id a tenant sends is prefixed with its own key id, no id it can send ("<other key id>/x" included)
   names another tenant's program: another key's ``GET``/``DELETE /v1/programs/{id}`` is a 404 (the
   program does not exist for it), and a call naming the id starts a program of its own, which can
   neither add service to the first nor borrow its priority. Two tenants' same-named programs never
   share a record anywhere.
3. Stored replies (Responses' ``previous_response_id``) remember their program's table id; a reply
   whose program another tenant owns is unknown to this one (calls.py rule 9, passthrough.py rule 1).
4. Signing. With a secret, ``POST /v1/programs`` answers ``<id>.<tag>``, where the tag is the first
   32 hex digits (128 bits) of HMAC-SHA256(secret, tenant NUL id). The tenant is inside the MAC, so an
   id signed for one key is a forgery for any other. Ids stay opaque: ``x`` and ``x.<tag>`` are two
   programs, and only ``--require-signed-ids`` checks tags, on every id a client names (any header,
   metadata or API field of identity.py rule 1): an unsigned or forged one is a 403. Calls without a
   program id still run as programs of their own (the proxy names those), and a Responses chain joins
   the program its stored reply names (the proxy wrote that, rule 3).
5. Secret. ``--program-id-secret`` or ``--program-id-secret-file``; none, with signing required: a
   random secret per process, so signed ids do not survive a restart and replicas disagree (give a
   secret when there is more than one replica; ``--workers`` hands one random secret to all its
   workers). The paper names forged program ids as an open limitation (reference.md §1).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from autellix.engine_adapters.protocol import MAX_ID_LENGTH

SEPARATOR = "/"
TAG_LENGTH = 32  # hex digits of the HMAC kept: 128 bits, out of reach of guessing
TAG_ROOM = TAG_LENGTH + 1  # ".<tag>"
HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Tenant:
    """Rules 1-2: one key's share of the program table (``key_id`` ``""``: the open proxy's one)."""

    key_id: str = ""

    def table_id(self, client_id: str) -> str:
        return f"{self.key_id}{SEPARATOR}{client_id}" if self.key_id else client_id

    def owns(self, table_id: str) -> bool:
        return not self.key_id or table_id.startswith(self.key_id + SEPARATOR)

    def client_id(self, table_id: str) -> str:
        """The id this tenant knows a program of its own by."""
        return table_id.removeprefix(self.key_id + SEPARATOR) if self.key_id else table_id


OPEN_TENANT = Tenant()


class UnsignedProgramId(ValueError):
    """Rule 4: an id without a valid tag while signing is required (403)."""

    def __init__(self, program_id: str) -> None:
        super().__init__(
            f"Program id {program_id!r} is not signed by this proxy: this proxy requires the ids that "
            "POST /v1/programs returns"
        )


@dataclass(frozen=True, slots=True, repr=False)
class ProgramIdSigner:
    """Rule 4 for one secret (never shown by ``repr``)."""

    secret: bytes

    def __repr__(self) -> str:
        return "ProgramIdSigner(<secret>)"

    def tag(self, tenant: Tenant, program_id: str) -> str:
        message = tenant.key_id.encode() + b"\0" + program_id.encode("utf-8", "surrogatepass")
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:TAG_LENGTH]

    def sign(self, tenant: Tenant, program_id: str) -> str:
        return f"{program_id}.{self.tag(tenant, program_id)}"

    def verify(self, tenant: Tenant, signed: str) -> bool:
        program_id, dot, tag = signed.rpartition(".")
        if not dot or not program_id or len(tag) != TAG_LENGTH or not set(tag) <= HEX:
            return False
        return hmac.compare_digest(tag, self.tag(tenant, program_id))


@dataclass(frozen=True, slots=True)
class ProgramIds:
    """What the proxy does with program ids: sign new ones (rule 4), require tags, namespace (rule 2)."""

    signer: ProgramIdSigner | None = None
    require_signed: bool = False

    def __post_init__(self) -> None:
        if self.require_signed and self.signer is None:
            raise ValueError("signed program ids are required but no signer was given")

    @property
    def max_requested_length(self) -> int:
        """The longest id a client may ask ``POST /v1/programs`` for (its signed form must fit)."""
        return MAX_ID_LENGTH - TAG_ROOM if self.signer is not None else MAX_ID_LENGTH

    def issue(self, tenant: Tenant, program_id: str) -> str:
        """Rule 4: the id a client gets back for a program it created."""
        return self.signer.sign(tenant, program_id) if self.signer is not None else program_id

    def table_id(self, tenant: Tenant, client_id: str) -> str:
        """Rules 2 and 4 for an id a client named; :class:`UnsignedProgramId` when a required tag is
        missing or wrong."""
        if self.require_signed:
            assert self.signer is not None
            if not self.signer.verify(tenant, client_id):
                raise UnsignedProgramId(client_id)
        return tenant.table_id(client_id)


def load_secret(secret: str | None, secret_file: str | None) -> bytes | None:
    """Rule 5: the configured secret (the file's content, stripped), or None."""
    if secret is not None:
        return secret.encode()
    if secret_file is not None:
        return read_secret_file(secret_file)
    return None


MIN_SECRET_LENGTH = 16


def read_secret_file(path: str) -> bytes:
    """The secret in a file (a mounted Secret); ValueError names the file, never its content."""
    try:
        with open(path, "rb") as handle:
            secret = handle.read().strip()
    except OSError as exc:
        raise ValueError(f"cannot read program id secret file {path!r}: {exc.strerror}") from None
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"program id secret file {path!r} must hold at least {MIN_SECRET_LENGTH} bytes")
    return secret
