"""`backupbot init`: a commented starter config, and the Slack app manifest built from manifest.yml.

manifest.yml (shipped in the wheel as bot/manifest.yml, a symlink in the checkout) stays the one
source: the HTTP variant fills the user's request URL into every slash command, the event
subscriptions and interactivity; the Socket Mode variant drops the URLs and turns Socket Mode on.
"""

from __future__ import annotations

import copy
import os
import sys
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from commands.errors import ConfigError, UsageError
from commands.signing import SigningKey, create_private_file, read_key_file, write_key_file

DEFAULT_CONFIG = "backupbot.toml"
DEFAULT_DATA_DIR = "/var/lib/backupbot"

STARTER_CONFIG = """\
# backupbot configuration, written by `backupbot init`. Every key is described in the README.
# Secrets never go in this file: tokens and database URLs come from the environment
# (SLACK_BOT_TOKEN, SLACK_APP_TOKEN or SLACK_SIGNING_SECRET, and the variable each database names).
# Check it with `backupbot check`, then start the bot with `backupbot run`.

[state]
path = "{data_dir}/backupbot.db"              # SQLite: catalog, jobs, approvals, incidents

[storage]
url = "file://{data_dir}/backups"             # or "s3://bucket/prefix" (AWS_* variables configure S3)
# Manifests and state copies are signed with this key (HMAC-SHA256): storage alone can then never hand the
# bot a backup. Keep a copy off this host (with your age identity): a catalog rebuild needs it. The first
# key signs; add old keys after it when you rotate. $BACKUPBOT_SIGNING_KEY, when set, comes first.
signing_key_files = ["{signing_key}"]

[databases.main]
url_env = "DATABASE_URL"                      # the environment variable that holds this database's DSN
# health_url = "https://app.example.com/healthz"        # checked after a restore (must answer 2xx)
# heartbeat_url = "https://hc-ping.com/YOUR-UUID"       # pinged after each successful scheduled backup

[access]
# Access fails closed: nobody may run /backup or /restore until operators are listed.
operators = []                                # Slack user (U…) or usergroup (S…) IDs, e.g. ["U0123", "S0456"]
approvers = []                                # who approves restores by reacting; the requester never counts
required_approvals = 1
approval_ttl_minutes = 30
# viewers = []                                # may run /db-health besides the operators

[channels]
# alerts = "C0ALERTS"                         # failed scheduled jobs, RPO breaches, undelivered results
# digest = "C0DIGEST"                         # the daily digest

[alerts]
# webhook_url = "https://example.com/hook"    # JSON POST of every alert, for when Slack cannot be reached

[schedules.main]                              # cron expressions, read as crontab reads them, in UTC
backup = "0 2 * * *"                          # daily, custom format
retention = "30 4 * * *"                      # prune by [retention]
drill = "0 5 * * 1"                           # weekly: restore the latest backup into a scratch database

[retention]                                   # for every database; [retention.main] overrides
keep_last = 7
keep_daily = 7
keep_weekly = 4
keep_monthly = 0
max_age_days = 30                             # wins over the keep_* rules

[health]
rpo_hours = 24                                # dead-man alert when no backup succeeded for this long

[jobs]
max_running = 2                               # backups, restores and drills at once, across all databases
"""


def starter_config(data_dir: str = DEFAULT_DATA_DIR, signing_key: str = "/etc/backupbot/signing.key") -> str:
    return STARTER_CONFIG.format(data_dir=data_dir.rstrip("/") or "/", signing_key=signing_key)


def default_signing_key_path(config_path: str | os.PathLike) -> Path:
    """Beside the config, private like it: `backupbot.toml` -> `backupbot.signing.key`."""
    return Path(config_path).with_suffix(".signing.key")


def ensure_signing_key(path: str | os.PathLike) -> tuple[SigningKey, bool]:
    """The key at `path`, created (0600) when missing; (key, created). Never overwrites a key."""
    if Path(path).exists():
        return read_key_file(str(path)), False
    return write_key_file(path), True


def write_starter_config(path: str | os.PathLike, data_dir: str = DEFAULT_DATA_DIR,
                         signing_key: str = "/etc/backupbot/signing.key") -> Path:
    """Create the config file 0600; an existing file is never overwritten."""
    return create_private_file(path, starter_config(data_dir, signing_key),
                               "not overwriting it (remove it or pass --config NEW_PATH)")


def manifest_text() -> str:
    """manifest.yml as shipped in the package (bot/manifest.yml), or from the checkout."""
    try:
        return resources.files("bot").joinpath("manifest.yml").read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return (Path(__file__).resolve().parent.parent / "manifest.yml").read_text(encoding="utf-8")


def request_url_checked(url: str) -> str:
    """Slack only calls https URLs; a bare host gets the bot's one endpoint, /slack/events."""
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(f"--request-url: expected https://HOST/slack/events, got {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise UsageError("--request-url: expected https://HOST/slack/events without credentials, query or fragment")
    if parts.path in ("", "/"):
        return f"https://{parts.netloc}/slack/events"
    return f"https://{parts.netloc}{parts.path}"


def slack_manifest(request_url: str | None = None) -> dict:
    """The manifest for HTTP mode (every request URL set to `request_url`) or, without one, Socket Mode."""
    import yaml

    manifest = copy.deepcopy(yaml.safe_load(manifest_text()))
    settings = manifest.setdefault("settings", {})
    commands = manifest.get("features", {}).get("slash_commands", [])
    events = settings.get("event_subscriptions")
    interactivity = settings.get("interactivity")
    if request_url:
        url = request_url_checked(request_url)
        for command in commands:
            command["url"] = url
        if events is not None:
            events["request_url"] = url
        if interactivity and interactivity.get("is_enabled"):
            interactivity["request_url"] = url
        settings["socket_mode_enabled"] = False
    else:
        for command in commands:
            command.pop("url", None)
        for table in (events, interactivity):
            if table is not None:
                table.pop("request_url", None)
        settings["socket_mode_enabled"] = True
    return manifest


def render_manifest(request_url: str | None = None) -> str:
    import yaml

    manifest = slack_manifest(request_url)
    if request_url:
        mode = (f"HTTP mode: Slack sends commands and events to {request_url_checked(request_url)}; "
                "set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET")
    else:
        mode = ("Socket Mode: no public URL needed; set SLACK_BOT_TOKEN and SLACK_APP_TOKEN "
                "(an app-level token with connections:write)")
    header = ("# Slack app manifest for backupbot, generated by `backupbot init` from manifest.yml.\n"
              f"# {mode}.\n"
              "# Paste it at https://api.slack.com/apps > Create New App > From an app manifest.\n")
    return header + yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, width=120)


def run_init(args, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    manifest = render_manifest(args.request_url)  # a bad URL fails before any file is written
    if not args.manifest_only:
        path = args.config or os.environ.get("BACKUPBOT_CONFIG") or DEFAULT_CONFIG
        key_path = Path(getattr(args, "signing_key", None) or default_signing_key_path(path)).absolute()
        if getattr(args, "signing_key", None) and Path(path).exists():  # adopting signing (or rotating) on a config
            key, created = ensure_signing_key(key_path)
            print(f"{'Created' if created else 'Kept'} signing key {key.key_id} in {key_path} (mode 0600). Put it first "
                  f"in [storage] signing_key_files of {path}; keep older keys after it so what they signed still "
                  "verifies, and keep a copy of it off this host.", file=err)
            return 0
        if Path(path).exists():  # before a key is made for a config that will not be written
            raise ConfigError(f"{path} already exists; not overwriting it (remove it, pass --config NEW_PATH, or "
                              "--signing-key PATH to only create a signing key)")
        key, created = ensure_signing_key(key_path)
        written = write_starter_config(path, args.data_dir, str(key_path))
        print(f"Wrote a starter config to {written} (mode 0600) and {'created' if created else 'kept'} its signing key "
              f"{key.key_id} in {key_path} (mode 0600; keep a copy off this host). Fill in [access] and the database "
              "URL variables, then run `backupbot check`.", file=err)
    out.write(manifest)
    return 0
