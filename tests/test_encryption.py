"""age encryption on the stream: the real `age` binary reads what the bot writes, and the other way round."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from commands.errors import ConfigError, EncryptionError, IntegrityError
from commands.pg.dump import make_compressor, make_decompressor
from commands.storage.encryption import (
    Chain,
    DecryptChain,
    Decryptor,
    Encryptor,
    check_identity,
    is_encrypted,
    parse_recipients,
)

MiB = 1 << 20


def keygen(path: Path) -> str:
    """A key file made by the standard age-keygen; returns its public key."""
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    os.chmod(path, 0o600)
    return subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "key.txt"
    return path, keygen(path)


def sample_chunks(total: int, chunk: int = MiB, seed: bytes = b"backupbot"):
    """Compressible, varied data generated chunk by chunk (never all in memory)."""
    block = hashlib.sha256(seed).digest() * (chunk // 32)
    for number in range(total // chunk):
        yield number.to_bytes(8, "big") + block[8:]


def rss_now() -> int:
    """Resident memory, which also counts what the Rust side (pyrage) allocates."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def encrypt_all(stage, chunks) -> bytes:
    return b"".join(stage.compress(c) for c in chunks) + stage.flush()


def test_recipients_are_validated_with_a_message_naming_the_entry(key):
    _, public = key
    assert parse_recipients([f"  {public} ", public]) == [public]
    with pytest.raises(ConfigError, match=r"storage.encrypt_to\[1\]: 'age1nope' is not a valid age public key"):
        parse_recipients([public, "age1nope"])
    with pytest.raises(ConfigError, match=r"encrypt_to\[0\]: 'ssh-ed25519 AAAA…' is not an age public key"):
        parse_recipients(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"])
    with pytest.raises(ConfigError, match="that is a private key"):
        parse_recipients(["AGE-SECRET-KEY-1QQQ"])
    with pytest.raises(ConfigError, match="at least one"):
        parse_recipients([])
    with pytest.raises(ConfigError, match="expected a list"):
        parse_recipients(public)


def test_zstd_then_age_on_the_stream_is_read_by_the_age_binary(tmp_path, key):
    keyfile, public = key
    data = list(sample_chunks(8 * MiB))
    stored = encrypt_all(Chain(make_compressor("zstd"), Encryptor([public])), data)
    assert is_encrypted(stored)
    artifact = tmp_path / "backup.dump.zst.age"
    artifact.write_bytes(stored)
    # the README's manual path: age -d -i key.txt FILE | zstd -d
    plain = subprocess.run(["age", "-d", "-i", str(keyfile), str(artifact)], check=True, capture_output=True).stdout
    assert zstandard.ZstdDecompressor().decompressobj().decompress(plain) == b"".join(data)


def test_age_binary_output_is_read_by_the_decryptor_chunk_by_chunk(tmp_path, key):
    keyfile, public = key
    plain = b"".join(sample_chunks(3 * MiB)) + b"tail that is not a whole chunk"
    source = tmp_path / "plain.bin"
    source.write_bytes(plain)
    encrypted = subprocess.run(["age", "-r", public, str(source)], check=True, capture_output=True).stdout
    decryptor = Decryptor(keyfile, recipients=[public])
    out = b"".join(decryptor.decompress(encrypted[i:i + 65536]) for i in range(0, len(encrypted), 65536))
    assert out + decryptor.flush() == plain


def test_two_recipients_either_key_decrypts(tmp_path, key):
    keyfile, public = key
    other_file = tmp_path / "other.txt"
    other_public = keygen(other_file)
    stored = encrypt_all(Encryptor([public, other_public]), [b"hello ", b"world"])
    for path in (keyfile, other_file):
        result = subprocess.run(["age", "-d", "-i", str(path)], input=stored, capture_output=True, check=True)
        assert result.stdout == b"hello world"


def test_gzip_chain_round_trips_through_decrypt_chain(key):
    keyfile, public = key
    data = list(sample_chunks(2 * MiB, chunk=256 * 1024))
    stored = encrypt_all(Chain(make_compressor("gzip"), Encryptor([public])), data)
    chain = DecryptChain(Decryptor(keyfile), make_decompressor("gzip"))
    out = b"".join(chain.decompress(stored[i:i + 100_000]) for i in range(0, len(stored), 100_000)) + chain.flush()
    assert out == b"".join(data)


def test_identity_file_readable_by_others_is_refused(key):
    keyfile, public = key
    os.chmod(keyfile, 0o644)
    with pytest.raises(EncryptionError, match=r"has mode 0644, readable by others; .*chmod 600"):
        Decryptor(keyfile, recipients=[public])
    os.chmod(keyfile, 0o400)
    Decryptor(keyfile, recipients=[public]).close()  # 0400 is stricter, and accepted


def test_missing_identity_is_a_clear_error_before_any_byte_is_read(tmp_path, key):
    _, public = key
    with pytest.raises(EncryptionError, match="set storage.identity_file"):
        check_identity(None, [public])
    with pytest.raises(EncryptionError, match=r"does not exist; restoring an encrypted backup needs"):
        check_identity(tmp_path / "nope.txt", [public])
    junk = tmp_path / "junk.txt"
    junk.write_text("# only a comment\n")
    junk.chmod(0o600)
    with pytest.raises(EncryptionError, match="holds no age private key"):
        check_identity(junk, [public])


def test_identity_that_is_not_a_recipient_is_named_up_front_and_on_the_stream(tmp_path, key):
    keyfile, public = key
    stranger = tmp_path / "stranger.txt"
    keygen(stranger)
    with pytest.raises(EncryptionError, match="is not one of this backup's recipients"):
        check_identity(stranger, [public])
    stored = encrypt_all(Encryptor([public]), [b"x" * 100_000])
    decryptor = Decryptor(stranger)  # no recipients known: found out from the header
    with pytest.raises(EncryptionError, match="is not one of this artifact's recipients"):
        decryptor.decompress(stored)


def test_truncated_or_flipped_ciphertext_is_an_integrity_error(key):
    keyfile, public = key
    stored = encrypt_all(Encryptor([public]), list(sample_chunks(MiB, chunk=65536)))
    truncated = Decryptor(keyfile)
    truncated.decompress(stored[:-1000])
    with pytest.raises(IntegrityError, match="corrupted or truncated"):
        truncated.flush()
    flipped = bytearray(stored)
    flipped[len(stored) // 2] ^= 1
    broken = Decryptor(keyfile)
    with pytest.raises(IntegrityError, match="corrupted or truncated"):
        broken.decompress(bytes(flipped))
        broken.flush()
    with pytest.raises(IntegrityError, match="not an age-encrypted file"):
        d = Decryptor(keyfile)
        d.decompress(b"PGDMP" + b"\0" * 5000)
        d.flush()


def test_abandoned_streams_end_their_worker_threads(key):
    import threading

    keyfile, public = key
    before = {t for t in threading.enumerate() if t.name.startswith("age-")}
    encryptor = Encryptor([public])
    encryptor.compress(b"partial dump")
    encryptor.close()
    decryptor = Decryptor(keyfile)
    decryptor.decompress(encrypt_all(Encryptor([public]), [b"y" * 200_000])[:1000])
    decryptor.close()
    assert {t for t in threading.enumerate() if t.name.startswith("age-") and t.is_alive()} == before


def test_200_mb_encrypt_and_decrypt_keep_memory_flat(key):
    """The whole round trip on the stream: 200 MB in 1 MiB chunks, Python allocations peak far below 50 MB."""
    keyfile, public = key
    encryptor = Encryptor([public])
    decryptor = Decryptor(keyfile, recipients=[public])
    digest_in, digest_out = hashlib.sha256(), hashlib.sha256()
    total = 0
    rss_start = rss_peak = rss_now()
    tracemalloc.start()
    try:
        for number, chunk in enumerate(sample_chunks(200 * MiB)):
            if number % 16 == 0:
                rss_peak = max(rss_peak, rss_now())
            digest_in.update(chunk)
            total += len(chunk)
            digest_out.update(decryptor.decompress(encryptor.compress(chunk)))
        digest_out.update(decryptor.decompress(encryptor.flush()))
        digest_out.update(decryptor.flush())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 200 * MiB
    assert digest_out.hexdigest() == digest_in.hexdigest()
    assert peak < 50 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert rss_peak - rss_start < 50 * MiB, f"RSS grew by {(rss_peak - rss_start) / MiB:.1f} MiB"
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB: more than a few chunks held"
