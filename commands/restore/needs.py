"""What a whole backup needs of the server it is restored onto, read from the backup itself at plan time.

A whole restore recreates what lives outside every schema too: extensions the server must have
installed, and objects only a superuser may create (event triggers, subscriptions, foreign-data
wrappers, access methods, procedural languages). Both are known before anyone is asked, from the
dump's own table of contents (`pg_restore --list` of a custom archive, the `-- Name: ...; Type: ...`
headers of a plain dump), so a restore never fails after approval for one of them.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from commands.errors import UsageError
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


def _stream(services, record: BackupRecord):
    """The dump's bytes, decrypted and decompressed, as they come."""
    decompressor = artifact_decompressor(record, services.settings.identity_file)
    try:
        for chunk in services.storage.read_chunks(record.key):
            yield decompressor.decompress(chunk)
        flush = getattr(decompressor, "flush", None)
        if flush is not None:
            yield flush()
    finally:
        if isinstance(decompressor, DecryptChain):
            decompressor.close()


def _custom_needs(services, record: BackupRecord) -> DumpNeeds:
    """`pg_restore --list` reads the TOC at the head of the archive from its stdin, then stops reading."""
    proc = subprocess.Popen([pg_bin("pg_restore"), "--list"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        for data in _stream(services, record):
            proc.stdin.write(data)
    except BrokenPipeError:
        pass  # it has read the TOC
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
    listing = proc.stdout.read().decode(errors="replace")
    if proc.wait() != 0:
        raise UsageError(f"pg_restore cannot read the table of contents of backup #{record.id}")
    extensions, superuser = [], []
    for line in listing.splitlines():
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


def _plain_needs(services, record: BackupRecord) -> DumpNeeds:
    extensions, superuser, tail = [], [], b""
    for data in _stream(services, record):
        buf = tail + data
        cut = buf.rfind(b"\n") + 1
        for m in _PLAIN_HEADER.finditer(buf, 0, cut):
            name, kind = m.group(1).decode(errors="replace"), m.group(2).decode()
            if kind == "EXTENSION":
                extensions.append(name)
            elif kind in SUPERUSER_CATALOGS.values():
                superuser.append(f"{kind} {name}")
        tail = buf[cut:][-4096:]
    return DumpNeeds(tuple(extensions), tuple(superuser))


def dump_needs(services, record: BackupRecord) -> DumpNeeds:
    return _custom_needs(services, record) if is_custom(record.format) else _plain_needs(services, record)


def check_server_has_what_the_dump_needs(services, record: BackupRecord, dsn: str, where: str) -> None:
    """Refuse, before anyone is asked, a whole restore that would fail on this server for what it lacks."""
    needs = dump_needs(services, record)
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
