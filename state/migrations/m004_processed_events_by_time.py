SQL = """
CREATE INDEX processed_events_by_time ON processed_events (received_at)
"""
