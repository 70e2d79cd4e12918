"""The core of backupbot: commands, their runners and storage. Knows nothing of Slack."""
