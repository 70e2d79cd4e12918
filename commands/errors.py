"""Typed errors the adapters turn into short replies.

Every error here is a *known* failure: its message is safe to show a user (already redacted) and
says what to do. Anything else that escapes a command is a bug and is logged with an id.
"""


class BackupbotError(Exception):
    """Base of every error whose message may be shown to the user as is."""


class UsageError(BackupbotError, ValueError):
    """The command text could not be parsed; the message carries the usage."""


class NotAllowedError(BackupbotError, PermissionError):
    """The user may not run this command."""


class UnknownDatabaseError(BackupbotError, LookupError):
    """The database is not configured."""


class NotFoundError(BackupbotError, LookupError):
    """A backup, request or incident that was asked for does not exist."""


class AlreadyRunningError(BackupbotError, RuntimeError):
    """Another backup or restore holds the database."""


class ConfigError(BackupbotError, ValueError):
    """The configuration file is invalid; the message names the key."""


class ChannelAccessError(BackupbotError, PermissionError):
    """The bot is not in the channel and cannot join it, so reactions there (approvals) would never reach it."""


class StorageError(BackupbotError, OSError):
    """Storage refused a read, write or delete."""


class DumpError(BackupbotError, RuntimeError):
    """pg_dump, psql or pg_restore failed; the message carries the redacted tail of stderr."""


class IntegrityError(BackupbotError, ValueError):
    """An artifact does not match its recorded checksum or manifest."""


class DatabaseUnavailableError(BackupbotError, ConnectionError):
    """The database could not be reached in time."""


class EncryptionError(BackupbotError, ValueError):
    """An artifact cannot be encrypted or decrypted: no identity file, an unsafe one, or a key that is not a recipient."""


class InstanceLockedError(BackupbotError, RuntimeError):
    """Another backupbot process already holds this state database."""


class ProvenanceError(IntegrityError):
    """A stored object is not signed with the bot's key, or its signature does not verify: storage is not trusted."""
