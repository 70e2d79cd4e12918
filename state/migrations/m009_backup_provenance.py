"""How the bot knows a catalogued backup is its own.

`signed_by` is the id of the key that signed the backup's manifest (commands/signing.py), NULL for a
backup taken before signing was set up (its catalog row's sha256 is then the trust anchor).
`rebuilt_from` names the manifest a catalog rebuild catalogued the row from, NULL when this bot took
the backup itself: an unsigned row that came from storage is never trusted.
"""

SQL = """
ALTER TABLE backups ADD COLUMN signed_by TEXT;
ALTER TABLE backups ADD COLUMN rebuilt_from TEXT;
"""
