"""The state database (catalog, requests, incidents, audit log) copied to storage, so it outlives the bot's disk.

After every successful job (`after_job`, best effort: a failed copy is logged and never changes the
job's outcome) and on `[schedules] state_copy = CRON` (`copy_now`, which raises so the scheduled run
is reported failed). Copies are age-encrypted to `[storage] encrypt_to` when it is set, signed with
the bot's key (no key, no copy: an unsigned one could never be restored), and all but the newest
KEEP are deleted. `backupbot state restore` brings one back (state/backup_copy.py).
"""

from __future__ import annotations

import logging

from commands.chat.context import Services
from commands.errors import ProvenanceError
from commands.redact import redact
from commands.storage.encryption import Encryptor
from state.backup_copy import StateCopy, copy_state, prune_state_copies

log = logging.getLogger(__name__)

KEEP = 30  # state copies kept in storage; the newest is always kept


def copy_now(services: Services) -> StateCopy | None:
    """Copy the state database to storage now; None for an in-memory state. Raises StorageError."""
    settings = services.settings
    if settings.state_path == ":memory:":
        return None
    if not settings.signing.can_sign:
        raise ProvenanceError("no signing key is configured ([storage] signing_key_files): a state copy nobody can "
                              "authenticate could never be restored, so none is stored")
    copy = copy_state(settings.state_path, services.storage, keyring=settings.signing,
                      encryptor=Encryptor(settings.encrypt_to) if settings.encrypt_to else None,
                      recipients=settings.encrypt_to, clock=services.clock)
    prune_state_copies(services.storage, KEEP)
    return copy


def after_job(services: Services, what: str) -> StateCopy | None:
    """Copy the state database after a successful job; a failure is logged, never raised."""
    try:
        return copy_now(services)
    except Exception as exc:
        log.warning("could not copy the state database to storage after %s: %s", what,
                    redact(str(exc) or type(exc).__name__, services.secrets()))
        return None
