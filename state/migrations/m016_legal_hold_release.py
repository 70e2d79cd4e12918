"""Releasing a legal hold (`/backup release HOLD --reason TEXT`): who lifted it, when and why. The hold row
stays, RELEASED, as the record; the backup it kept is then deleted at the ceiling like any other.
"""

SQL = """
ALTER TABLE legal_holds ADD COLUMN released_at TEXT;
ALTER TABLE legal_holds ADD COLUMN released_by TEXT;
ALTER TABLE legal_holds ADD COLUMN release_reason TEXT
"""
