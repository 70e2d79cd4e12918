"""/incident: timelines, the DR checklist, exports and the audit log."""
