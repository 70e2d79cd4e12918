"""/restore: plans, requests and approvals, running and verifying restores, drills."""
