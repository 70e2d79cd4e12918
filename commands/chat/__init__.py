"""Chat plumbing every operation shares: argument parsing, the reply interface, access, context, job slots."""
