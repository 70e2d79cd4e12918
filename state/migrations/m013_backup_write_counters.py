"""Each logical backup keeps the write counters read in its dump's snapshot (pg_stat_user_tables, with the
server's identity and statistics epoch), as JSON: a restore plan compares them with the live ones to say
how many row changes the restore would discard. Backups taken before have none (NULL): "cannot know"."""

SQL = """
ALTER TABLE backups ADD COLUMN write_counters TEXT;
"""
