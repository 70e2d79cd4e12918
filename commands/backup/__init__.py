"""/backup: taking backups, listing them, retention and pruning, rebuilding the catalog."""
