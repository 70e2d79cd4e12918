"""What a whole backup needs of the server it is restored onto, read from the backup itself at plan time.

A whole restore recreates what lives outside every schema too: extensions the server must have
installed, and objects only a superuser may create (event triggers, subscriptions, foreign-data
wrappers, access methods, procedural languages). Both are known before anyone is asked, from the
dump's own table of contents (`pg_restore --list` of a custom archive, the `-- Name: ...; Type: ...`
headers of a plain dump), so a restore never fails after approval for one of them.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import threading
from dataclasses import dataclass

from commands.errors import EncryptionError, IntegrityError, UsageError
from commands.pg import snapshot as pg_snapshot
from commands.pg.restore.artifact import artifact_decompressor
from commands.pg.tools import pg_bin
from commands.restore.rules import is_custom
from commands.storage.encryption import DecryptChain
from state.backups import BackupRecord

# catalogs of the entries only a superuser may create, as `pg_restore --list` numbers them (the same in every release)
SUPERUSER_CATALOGS = {3466: "EVENT TRIGGER", 6100: "SUBSCRIPTION", 2328: "FOREIGN DATA WRAPPER", 2601: "ACCESS METHOD",
                      2612: "PROCEDURAL LANGUAGE"}
PG_EXTENSION = 3079
_TOC_LINE = re.compile(r"^\d+; (\d+) \d+ (.*)$")
_PLAIN_HEADER = re.compile(rb"^-- Name: (.*); Type: ([A-Z ]+); Schema: ", re.MULTILINE)


@dataclass(frozen=True)
class DumpNeeds:
    extensions: tuple[str, ...]
    superuser_only: tuple[str, ...]  # "EVENT TRIGGER note_ddl", ...


class _Artifact:
    """The stored artifact read once: every stored byte hashed, the dump decompressed only while wanted
    (a custom archive's TOC is at its head), so the plan's integrity check and this one cost one read."""

    def __init__(self, services, record: BackupRecord):
        self.services, self.record = services, record
        self.digest = hashlib.sha256()

    def dump(self, wanted):
        """Feed the decompressed dump to `wanted(bytes) -> bool` (False: it has enough); hash the rest."""
        decompressor = artifact_decompressor(self.record, self.services.settings.identity_file)
        reading, broken = True, None
        try:
            for chunk in self.services.storage.read_chunks(self.record.key):
                self.digest.update(chunk)
                if reading:
                    try:
                        reading = wanted(decompressor.decompress(chunk))
                    except Exception as exc:  # zlib.error, zstd.ZstdError, a wrong age key: keep hashing to say why
                        reading, broken = False, exc
            flush = getattr(decompressor, "flush", None)
            if reading and flush is not None:
                try:
                    wanted(flush())
                except Exception as exc:
                    broken = exc
        finally:
            if isinstance(decompressor, DecryptChain):
                decompressor.close()
        if self.digest.hexdigest() != self.record.sha256:
            raise IntegrityError(f"backup #{self.record.id} is corrupted: its artifact's sha256 is "
                                 f"{self.digest.hexdigest()[:12]}, the catalog says {self.record.sha256[:12]}; "
                                 "nothing was restored")
        if isinstance(broken, EncryptionError | IntegrityError):
            raise type(broken)(f"backup #{self.record.id}: {broken}; nothing was restored")
        if broken is not None:
            raise IntegrityError(f"backup #{self.record.id} cannot be decompressed ({type(broken).__name__}); "
                                 "nothing was restored")


def _custom_needs(artifact: _Artifact) -> DumpNeeds:
    """`pg_restore --list` reads the TOC at the head of the archive from its stdin, then stops reading."""
    proc = subprocess.Popen([pg_bin("pg_restore"), "--list"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    listing: list[bytes] = []
    reader = threading.Thread(target=lambda: listing.append(proc.stdout.read()), daemon=True)
    reader.start()

    def feed(data: bytes) -> bool:
        try:
            proc.stdin.write(data)
            return True
        except BrokenPipeError:
            return False  # it has read the TOC

    try:
        artifact.dump(feed)
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        code = proc.wait()
        reader.join()
    if code != 0:
        raise UsageError(f"pg_restore cannot read the table of contents of backup #{artifact.record.id}")
    extensions, superuser = [], []
    for line in b"".join(listing).decode(errors="replace").splitlines():
        m = _TOC_LINE.match(line)
        if not m:
            continue
        catalog, rest = int(m.group(1)), m.group(2)
        if catalog == PG_EXTENSION and rest.startswith("EXTENSION - "):
            extensions.append(rest.removeprefix("EXTENSION - ").strip())
        elif catalog in SUPERUSER_CATALOGS:
            kind = SUPERUSER_CATALOGS[catalog]
            name = rest.removeprefix(f"{kind} - ").rsplit(" ", 1)[0] if kind != "PROCEDURAL LANGUAGE" else rest
            superuser.append(f"{kind} {name.strip()}")
    return DumpNeeds(tuple(extensions), tuple(superuser))


def _plain_needs(artifact: _Artifact) -> DumpNeeds:
    extensions, superuser, tail = [], [], [b""]

    def scan(data: bytes) -> bool:
        buf = tail[0] + data
        cut = buf.rfind(b"\n") + 1
        for m in _PLAIN_HEADER.finditer(buf, 0, cut):
            name, kind = m.group(1).decode(errors="replace"), m.group(2).decode()
            if kind == "EXTENSION":
                extensions.append(name)
            elif kind in SUPERUSER_CATALOGS.values():
                superuser.append(f"{kind} {name}")
        tail[0] = buf[cut:][-4096:]
        return True

    artifact.dump(scan)
    return DumpNeeds(tuple(extensions), tuple(superuser))


def dump_needs(services, record: BackupRecord) -> DumpNeeds:
    """What the dump needs, read in the same pass that checks the artifact's sha256 (IntegrityError)."""
    artifact = _Artifact(services, record)
    return _custom_needs(artifact) if is_custom(record.format) else _plain_needs(artifact)


def check_server_has_what_the_dump_needs(needs: DumpNeeds, record: BackupRecord, dsn: str, where: str) -> None:
    """Refuse, before anyone is asked, a whole restore that would fail on this server for what it lacks."""
    with pg_snapshot.connect(dsn) as conn:
        available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
    missing = sorted(set(needs.extensions) - available)
    if missing:
        raise UsageError(f"backup #{record.id} needs extension(s) {', '.join(missing)}, which {where} does not have "
                         "installed: install them there (the server's contrib or extension packages) first")
    if needs.superuser_only and not superuser:
        listed = ", ".join(needs.superuser_only[:5]) + (" ..." if len(needs.superuser_only) > 5 else "")
        raise UsageError(f"backup #{record.id} holds objects only a superuser may create ({listed}); the bot's role "
                         f"on {where} is not one: restore as a superuser, or with --tables")
