"""A physical backup's seal: the bot's signed record of the sha256 of the pgBackRest manifest of the set it
took (commands/backup/physical_seal.py), checked before anything restores the set. NULL for sets taken
before sealing, or without a signing key: those restore as pgBackRest's own checksums allow, and say so.
"""

SQL = """
ALTER TABLE physical_backups ADD COLUMN manifest_seal TEXT
"""
