"""/db-health: one function per check, and the report."""
