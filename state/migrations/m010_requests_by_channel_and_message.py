"""Restore requests are found by the channel and the message together (state.approvals.request_for_message).

A message id alone does not name a request: console sessions and adapters number their messages
on their own, so the lookup, and its index, take the request's channel as well.
"""

SQL = """
DROP INDEX IF EXISTS restore_requests_by_message;
CREATE INDEX restore_requests_by_channel_message ON restore_requests (channel, message_id)
"""
