"""Authentication of what the bot stores and later reads back: manifests, state copies, their pointer.

Storage is not trusted: whoever can write to the bucket could otherwise hand the bot a forged
manifest (a plain-SQL "backup" that runs their SQL at restore time) or a forged state database. An
age recipient is a public key, so encryption proves nothing about who wrote an object. What proves
it is a MAC under a secret that never sits in the store: HMAC-SHA256 from `cryptography`, the key in
a 0600 file named by `[storage] signing_key_files` or in `$BACKUPBOT_SIGNING_KEY`.

A signed document is JSON with a `signature` member {alg, key_id, mac}. The MAC covers a purpose
("backup-manifest", "state-copy", ...) and the canonical JSON of everything else, so a state pointer
cannot pass as a manifest and reordering keys changes nothing. Several keys may be configured for
rotation: the first signs new objects, any of them verifies (found by key id).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac

from commands.errors import ConfigError, ProvenanceError

ALGORITHM = "hmac-sha256"
KEY_PREFIX = "backupbot-signing-key-v1:"
KEY_ENV = "BACKUPBOT_SIGNING_KEY"
SIGNATURE = "signature"
MIN_KEY_BYTES = 32


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    source: str  # where it came from, for messages: a file path or the environment variable's name
    secret: bytes = field(repr=False)

    @property
    def text(self) -> str:
        """The key as its file holds it: a secret, only ever given to redaction."""
        return base64.urlsafe_b64encode(self.secret).decode()

    def mac(self, purpose: str, body: dict) -> str:
        h = hmac.HMAC(self.secret, hashes.SHA256())
        h.update(_message(purpose, body))
        return h.finalize().hex()

    def verify(self, purpose: str, body: dict, mac_hex: str) -> bool:
        h = hmac.HMAC(self.secret, hashes.SHA256())
        h.update(_message(purpose, body))
        try:
            h.verify(bytes.fromhex(mac_hex))  # constant time
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Signed:
    """A document whose signature verified: its content and the key that signed it."""

    body: dict
    key_id: str


@dataclass(frozen=True)
class Keyring:
    keys: tuple[SigningKey, ...] = ()

    @property
    def can_sign(self) -> bool:
        return bool(self.keys)

    @property
    def signing_key_id(self) -> str | None:
        return self.keys[0].key_id if self.keys else None

    def sign(self, purpose: str, body: dict) -> dict:
        """`body` with a signature by the first key. Raises ProvenanceError when no key is configured."""
        if not self.keys:
            raise ProvenanceError("no signing key is configured ([storage] signing_key_files or $BACKUPBOT_SIGNING_KEY)")
        content = {k: v for k, v in body.items() if k != SIGNATURE}
        key = self.keys[0]
        return {**content, SIGNATURE: {"alg": ALGORITHM, "key_id": key.key_id, "mac": key.mac(purpose, content)}}

    def verify(self, purpose: str, document: object, what: str) -> Signed:
        """The document's content, once its signature verifies; raises ProvenanceError saying why not."""
        if not isinstance(document, dict):
            raise ProvenanceError(f"{what} is not a JSON object")
        signature = document.get(SIGNATURE)
        if signature is None:
            raise ProvenanceError(f"{what} is not signed")
        if not isinstance(signature, dict) or signature.get("alg") != ALGORITHM or not isinstance(
                signature.get("mac"), str) or not isinstance(signature.get("key_id"), str):
            raise ProvenanceError(f"{what} has a signature this bot does not read (expected {ALGORITHM})")
        if not self.keys:
            raise ProvenanceError(f"{what} is signed, but no signing key is configured to verify it with")
        content = {k: v for k, v in document.items() if k != SIGNATURE}
        for key in self.keys:
            if key.key_id == signature["key_id"]:
                if key.verify(purpose, content, signature["mac"]):
                    return Signed(body=content, key_id=key.key_id)
                raise ProvenanceError(f"{what}: its signature does not match (changed after signing, or forged)")
        known = ", ".join(k.key_id for k in self.keys)
        raise ProvenanceError(f"{what} is signed with key {signature['key_id'][:16]!r}, which is none of the configured "
                              f"keys ({known})")


def _message(purpose: str, body: dict) -> bytes:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return b"backupbot/v1/" + purpose.encode() + b"\0" + canonical.encode()


def key_id(secret: bytes) -> str:
    """A public name for a key (it reveals nothing of the secret), so a signature says which key made it."""
    return hashlib.sha256(b"backupbot key id\0" + secret).hexdigest()[:16]


def new_key_text() -> str:
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(MIN_KEY_BYTES)).decode() + "\n"


def parse_key(text: str, source: str) -> SigningKey:
    value = text.strip()
    if not value.startswith(KEY_PREFIX):
        raise ConfigError(f"{source} is not a backupbot signing key (it starts with {KEY_PREFIX!r}; "
                          "`backupbot init --signing-key PATH` makes one)")
    try:
        secret = base64.urlsafe_b64decode(value[len(KEY_PREFIX):].encode())
    except (ValueError, TypeError):
        raise ConfigError(f"{source} is not a backupbot signing key (its key is not base64)") from None
    if len(secret) < MIN_KEY_BYTES:
        raise ConfigError(f"{source} holds a {len(secret)}-byte key; signing keys are at least {MIN_KEY_BYTES} bytes")
    return SigningKey(key_id=key_id(secret), source=source, secret=secret)


def read_key_file(path: str) -> SigningKey:
    """A key from a private file: refused when others may read it (like ssh does with its keys)."""
    where = f"storage.signing_key_files: {path}"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist (`backupbot init --signing-key {path}` creates one)") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(f"{where} may be read by others (mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 it")
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_key(text, path)


def create_private_file(path: str | os.PathLike, text: str, exists: str) -> Path:
    """Create `path` 0600 with `text`, never overwriting: `exists` is the ConfigError's text when it is there.
    (Secrets and the config that names them are created private from the first byte, not chmod'ed after.)"""
    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{target} already exists; {exists}") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {target}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return target


def write_key_file(path: str | os.PathLike) -> SigningKey:
    """Create a new key file 0600; an existing file is never overwritten."""
    text = new_key_text()
    target = create_private_file(path, text, "not overwriting a signing key")
    return parse_key(text, str(target))


def load_keyring(files: tuple[str, ...], env_value: str | None) -> Keyring:
    """The environment's key first (it signs), then the files in order; duplicates once."""
    keys: list[SigningKey] = []
    if env_value:
        keys.append(parse_key(env_value, f"${KEY_ENV}"))
    keys.extend(read_key_file(path) for path in files)
    unique: dict[str, SigningKey] = {}
    for key in keys:
        unique.setdefault(key.key_id, key)
    return Keyring(tuple(unique.values()))

