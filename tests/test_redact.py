"""Secrets never reach Slack, a log or the state database."""

from __future__ import annotations

from commands.redact import describe_dsn, redact


def test_passwords_in_urls_and_pairs_are_removed():
    text = "could not connect to postgresql://app:hunter2@db.internal:5432/prod; password=hunter2 x"
    out = redact(text)
    assert "hunter2" not in out
    assert "postgresql://app:***@db.internal:5432/prod" in out


def test_known_secrets_and_slack_tokens_are_removed():
    out = redact("token xoxb-123-456-abc and s3cr3t-value", ["s3cr3t-value"])
    assert "xoxb-123" not in out and "s3cr3t-value" not in out


def test_describe_dsn_shows_target_without_credentials():
    assert describe_dsn("postgresql://app:hunter2@db.internal:6543/prod") == "db.internal:6543/prod"
    assert "hunter2" not in describe_dsn("host=db user=app password=hunter2 dbname=prod")
