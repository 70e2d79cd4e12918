"""[storage]: where artifacts go, whom they are encrypted to, and the keys that sign what is stored.

```toml
[storage]
url = "s3://bucket/prefix"                        # or "file:///var/lib/backupbot"
encrypt_to = ["age1..."]                          # age public keys every artifact is encrypted to
identity_file = "/etc/backupbot/age.key"          # the private key, read only to restore or drill
signing_key_files = ["/etc/backupbot/signing.key"]
```

Only the keys are read here; the key files themselves (mode checks, HMAC) are commands/signing.py's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyrage
from pyrage import x25519

from commands.errors import ConfigError
from commands.settings.values import string
from commands.signing import Keyring, load_keyring


@dataclass(frozen=True)
class StorageConfig:
    url: str = "file://./backups"
    encrypt_to: tuple[str, ...] = ()  # age public keys (age1…)
    identity_file: str | None = None  # the age private key file
    signing: Keyring = field(default_factory=Keyring)  # signing_key_files, then $BACKUPBOT_SIGNING_KEY


def parse_storage(table: Mapping, signing_key: str | None = None, default_url: str = "file://./backups") -> StorageConfig:
    """`signing_key` is the value of $BACKUPBOT_SIGNING_KEY, when set; `default_url` the url without a `url` key."""
    return StorageConfig(
        url=string(table, "storage", "url", default_url),
        encrypt_to=_age_recipients(table),
        identity_file=string(table, "storage", "identity_file", None),
        signing=parse_signing(table, signing_key),
    )


def parse_signing(storage: Mapping, env_value: str | None) -> Keyring:
    """[storage] signing_key_files = ["/etc/backupbot/signing.key", ...]: read and checked at load."""
    files = storage.get("signing_key_files", [])
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise ConfigError('storage.signing_key_files: expected a list of key file paths, like ["/etc/backupbot/signing.key"]')
    return load_keyring(tuple(os.path.expanduser(f) for f in files), env_value)


def _age_recipients(storage: Mapping) -> tuple[str, ...]:
    """[storage] encrypt_to: age X25519 public keys (age1…), checked as the encryptor will read them."""
    if "encrypt_to" not in storage:
        return ()
    values = storage["encrypt_to"]
    if not isinstance(values, list) or not values:
        raise ConfigError('storage.encrypt_to: expected a list of age public keys, like ["age1..."]')
    keys: list[str] = []
    for index, value in enumerate(values):
        where, text = f"storage.encrypt_to[{index}]", value.strip() if isinstance(value, str) else ""
        if text.upper().startswith("AGE-SECRET-KEY-"):  # never echoed
            raise ConfigError(f"{where}: that is a private key: put its public key here (age1…, printed by "
                              "`age-keygen -y KEYFILE`) and the key file's path in storage.identity_file")
        try:
            x25519.Recipient.from_str(text)
        except (pyrage.RecipientError, ValueError):
            shown = text if len(text) <= 20 else text[:16] + "…"
            raise ConfigError(f"{where}: {shown or value!r} is not an age public key (age1…, printed by "
                              "`age-keygen -y KEYFILE`)") from None
        if text not in keys:
            keys.append(text)
    return tuple(keys)
