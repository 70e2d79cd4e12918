"""One fixture module per real dependency: PostgreSQL, S3 (moto over HTTP), Slack (fake Web API)."""

pytest_plugins = ["tests.fix_pg", "tests.fix_s3", "tests.fix_slack", "tests.fix_reliability", "tests.fix_pgbackrest"]
