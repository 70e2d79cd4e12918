"""Restore requests keep, as columns, the few facts of their plan that state/ and /db-health query.

The plan itself is the restore domain's JSON (commands/restore/plans.py) and nothing else reads it
by key: which database a request created (`created_dbname`, NULL when it replaced one or restored
to a new cluster) and the backup's stored size (`backup_size`, for the expected duration) are
written when the request is created. Requests stored before this migration are filled in once, here.
"""

SQL = """
ALTER TABLE restore_requests ADD COLUMN created_dbname TEXT;
ALTER TABLE restore_requests ADD COLUMN backup_size INTEGER;
UPDATE restore_requests SET
    created_dbname = CASE WHEN COALESCE(json_extract(plan, '$.kind'), 'logical') = 'logical'
                           AND json_extract(plan, '$.target_exists') = 0
                          THEN json_extract(plan, '$.target_dbname') END,
    backup_size = json_extract(plan, '$.size')
"""
