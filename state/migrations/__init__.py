"""Numbered schema migrations: mNNN_name.py, each with an `SQL` string of `;`-terminated statements."""
