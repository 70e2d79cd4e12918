"""age encryption on the stream: an Encryptor after the compressor, a Decryptor before the decompressor.

The output is the standard age format (X25519 recipients), so a stored artifact decrypts by hand with
`age -d -i key.txt FILE | zstd -dc | pg_restore ...`. pyrage (the Rust `age` crate) does the crypto.
Its streaming API pulls from a reader and pushes to a writer; `_Pump` runs it on a thread and turns it
into the push shape of commands/pg_dump.py's compressors: each `compress`/`decompress` call hands one
chunk over and returns once pyrage has consumed it, so at most one input chunk and the ciphertext it
produced are held in memory, whatever the size of the stream.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import pyrage
from pyrage import x25519

from commands.errors import ConfigError, EncryptionError, IntegrityError

AGE_MAGIC = b"age-encryption.org/v1\n"
RECIPIENT_PREFIX = "age1"
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"


def parse_recipients(values: Iterable[str], key: str = "storage.encrypt_to") -> list[str]:
    """Validate age X25519 public keys (`age1…`); return them stripped, in order, without duplicates.

    Raises ConfigError naming `key` and the position of the bad entry.
    """
    if isinstance(values, str):
        raise ConfigError(f'{key}: expected a list of age public keys, like ["age1..."]')
    recipients: list[str] = []
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise ConfigError(f"{key}[{index}]: expected an age public key (a string starting with age1), got {value!r}")
        text = value.strip()
        if text.upper().startswith(IDENTITY_PREFIX):
            raise ConfigError(f"{key}[{index}]: that is a private key (AGE-SECRET-KEY-…); put the public key "
                              "(age1…, printed by `age-keygen -y KEYFILE`) here and keep the private key in "
                              "storage.identity_file")
        shown = text if len(text) <= 20 else text[:16] + "…"
        if not text.startswith(RECIPIENT_PREFIX):
            raise ConfigError(f"{key}[{index}]: {shown!r} is not an age public key (they start with age1)")
        try:
            x25519.Recipient.from_str(text)
        except pyrage.RecipientError:
            raise ConfigError(f"{key}[{index}]: {shown!r} is not a valid age public key (bad Bech32 encoding: "
                              "copy it again from `age-keygen -y KEYFILE`)") from None
        if text not in recipients:
            recipients.append(text)
    if not recipients:
        raise ConfigError(f"{key}: give at least one age public key (age1…)")
    return recipients


def load_identities(identity_file: str | os.PathLike) -> list[x25519.Identity]:
    """Read an age key file (as `age-keygen -o` writes it). It must be 0600 (or stricter) and hold a key."""
    path = Path(identity_file).expanduser()
    try:
        info = path.stat()
    except FileNotFoundError:
        raise EncryptionError(f"storage.identity_file: {path} does not exist; restoring an encrypted backup needs "
                              "the age private key it was encrypted to") from None
    except OSError as exc:
        raise EncryptionError(f"storage.identity_file: cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise EncryptionError(f"storage.identity_file: {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise EncryptionError(f"storage.identity_file: {path} has mode {mode:04o}, readable by others; "
                              f"it holds a private key: run `chmod 600 {path}`")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EncryptionError(f"storage.identity_file: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    identities = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.upper().startswith(IDENTITY_PREFIX):
            raise EncryptionError(f"storage.identity_file: line {number} of {path} is not an age private key "
                                  "(AGE-SECRET-KEY-1…)")
        try:
            identities.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise EncryptionError(f"storage.identity_file: line {number} of {path} is not a valid age private key") from None
    if not identities:
        raise EncryptionError(f"storage.identity_file: {path} holds no age private key (AGE-SECRET-KEY-1…)")
    return identities


def public_keys(identities: Iterable[x25519.Identity]) -> list[str]:
    return [str(identity.to_public()) for identity in identities]


def check_identity(identity_file: str | os.PathLike | None, recipients: Iterable[str]) -> list[x25519.Identity]:
    """Before a restore is planned: the identity file exists, is private, and matches one of `recipients`.

    Raises EncryptionError saying which; returns the identities for a Decryptor.
    """
    recipients = list(recipients)
    if not identity_file:
        raise EncryptionError("this backup is encrypted with age: set storage.identity_file to the private key "
                              f"of one of its recipients ({_short_list(recipients)})")
    identities = load_identities(identity_file)
    if recipients and not set(public_keys(identities)) & set(recipients):
        raise EncryptionError(f"storage.identity_file: the key in {Path(identity_file).expanduser()} "
                              f"(public key {_short(public_keys(identities)[0])}) is not one of this backup's "
                              f"recipients ({_short_list(recipients)})")
    return identities


def is_encrypted(head: bytes) -> bool:
    """True when `head` (the first bytes of an artifact) starts an age file."""
    return head.startswith(AGE_MAGIC)


def _short(key: str) -> str:
    return key[:12] + "…" + key[-4:] if len(key) > 20 else key


def _short_list(keys: list[str]) -> str:
    return ", ".join(_short(k) for k in keys) or "none recorded"


class _Aborted(Exception):
    """Raised inside pyrage's read when the stream is abandoned, to end the worker thread."""


class _Pump:
    """Runs a pull-based `run(reader, writer)` on a thread and feeds it chunk by chunk.

    `feed(data)` hands `data` over and waits until the worker has consumed all of it and asks for
    more (or finished), then returns the output produced so far. So calls are synchronous and the
    memory held is one input chunk plus its output.
    """

    def __init__(self, run: Callable[[object, object], None], name: str):
        self._cond = threading.Condition()
        self._pending = memoryview(b"")
        self._eof = False
        self._aborted = False
        self._hungry = False  # the worker is blocked in read() with nothing pending
        self._done = False
        self._error: BaseException | None = None
        self._out: list[bytes] = []
        self._thread = threading.Thread(target=self._main, args=(run,), daemon=True, name=name)
        self._thread.start()

    # -- the worker's side (called by pyrage)

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._pending and not self._eof:
                if self._aborted:
                    raise _Aborted()
                self._hungry = True
                self._cond.notify_all()
                self._cond.wait()
            self._hungry = False
            if self._aborted:
                raise _Aborted()
            if size is None or size < 0:
                size = len(self._pending)
            data = bytes(self._pending[:size])
            self._pending = self._pending[size:]
            return data

    def write(self, data: bytes) -> int:
        with self._cond:
            self._out.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def _main(self, run: Callable[[object, object], None]) -> None:
        error: BaseException | None = None
        try:
            run(self, self)
        except BaseException as exc:  # handed to the feeding thread
            error = exc
        with self._cond:
            self._error = error
            self._done = True
            self._cond.notify_all()

    # -- the caller's side

    def feed(self, data: bytes) -> bytes:
        if not data:
            return self._take()
        with self._cond:
            self._raise_if_failed()
            if self._done or self._eof:
                raise ValueError("stream already finished")
            self._pending = memoryview(data)
            self._hungry = False
            self._cond.notify_all()
            while not self._done and not (self._hungry and not self._pending):
                self._cond.wait()
            self._raise_if_failed()
        return self._take()

    def finish(self) -> bytes:
        with self._cond:
            self._eof = True
            self._cond.notify_all()
            while not self._done:
                self._cond.wait()
        self._thread.join()
        self._raise_if_failed()
        return self._take()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._pending = memoryview(b"")
            self._out = []
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _take(self) -> bytes:
        with self._cond:
            out, self._out = self._out, []
        return b"".join(out)


class Encryptor:
    """age encryption with the compressor interface: `compress(bytes) -> bytes`, then `flush() -> bytes` once."""

    def __init__(self, recipients: Iterable[str]):
        self.recipients = parse_recipients(recipients)
        parsed = [x25519.Recipient.from_str(r) for r in self.recipients]
        self._pump = _Pump(lambda reader, writer: pyrage.encrypt_io(reader, writer, parsed), "age-encrypt")

    def compress(self, data: bytes) -> bytes:
        try:
            return self._pump.feed(data)
        except pyrage.EncryptError as exc:
            raise EncryptionError(f"age encryption failed: {exc}") from None

    def flush(self) -> bytes:
        try:
            return self._pump.finish()
        except pyrage.EncryptError as exc:
            raise EncryptionError(f"age encryption failed: {exc}") from None

    def close(self) -> None:
        """Abandon the stream (a failed dump); safe to call at any time."""
        self._pump.abort()


class Decryptor:
    """age decryption with the decompressor interface: `decompress(bytes) -> bytes`; `flush()` at the end.

    `flush()` raises IntegrityError when the stream was truncated. A key that is not one of the
    recipients raises EncryptionError on the first chunk that completes the header.
    """

    def __init__(self, identity_file: str | os.PathLike | None = None, *, identities: list | None = None,
                 recipients: Iterable[str] = ()):
        if identities is None:
            identities = check_identity(identity_file, recipients)
        self._identity_file = identity_file
        self._pump = _Pump(lambda reader, writer: pyrage.decrypt_io(reader, writer, identities), "age-decrypt")

    def decompress(self, data: bytes) -> bytes:
        try:
            return self._pump.feed(data)
        except Exception as exc:
            raise self._error(exc) from None

    def flush(self) -> bytes:
        try:
            return self._pump.finish()
        except Exception as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        self._pump.abort()

    def _error(self, exc: Exception) -> Exception:
        text = str(exc)
        if isinstance(exc, pyrage.DecryptError) and "No matching keys" in text:
            where = f" in {self._identity_file}" if self._identity_file else ""
            return EncryptionError(f"the age key{where} is not one of this artifact's recipients: it cannot be decrypted "
                                   "with this storage.identity_file")
        if isinstance(exc, pyrage.DecryptError) and "Header is invalid" in text:
            return IntegrityError("the artifact is not an age-encrypted file (its header is invalid)")
        if isinstance(exc, (pyrage.DecryptError, OSError)):
            return IntegrityError("the encrypted artifact is corrupted or truncated (age authentication failed)")
        return exc


def make_encryptor(recipients: Iterable[str] | None):
    """An Encryptor, or None when no recipients are configured (nothing to chain)."""
    recipients = list(recipients or [])
    return Encryptor(recipients) if recipients else None


class Chain:
    """Stages with the compressor interface run one after the other: Chain(compressor, encryptor)."""

    def __init__(self, *stages):
        self.stages = [s for s in stages if s is not None]

    def compress(self, data: bytes) -> bytes:
        for stage in self.stages:
            if not data:
                return b""
            data = stage.compress(data)
        return data

    def flush(self) -> bytes:
        data = b""
        for stage in self.stages:
            data = (stage.compress(data) if data else b"") + stage.flush()
        return data


class DecryptChain:
    """Decryptor then decompressor, with the decompressor interface: DecryptChain(decryptor, decompressor)."""

    def __init__(self, *stages):
        self.stages = [s for s in stages if s is not None]

    def decompress(self, data: bytes) -> bytes:
        for stage in self.stages:
            if not data:
                return b""
            data = stage.decompress(data)
        return data

    def flush(self) -> bytes:
        data = b""
        for stage in self.stages:
            out = stage.decompress(data) if data else b""
            finish = getattr(stage, "flush", None)
            data = out + (finish() if finish else b"")
        return data

    def close(self) -> None:
        """Abandon the stream (read only its head, or failed); safe to call at any time."""
        for stage in self.stages:
            if hasattr(stage, "close"):
                stage.close()
