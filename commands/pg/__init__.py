"""PostgreSQL tools: pg_dump, pg_restore, psql, pgBackRest, catalogs and names, throwaway clusters."""
