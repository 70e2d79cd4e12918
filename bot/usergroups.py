"""Usergroup membership from usergroups.users.list, cached so access checks stay fast."""

from __future__ import annotations

import logging
import threading
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)


class UsergroupCache:
    def __init__(self, client: WebClient, ttl_seconds: float = 300, clock=time.monotonic):
        self.client = client
        self.ttl = ttl_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, set[str]]] = {}
        self._lock = threading.Lock()

    def members(self, group_id: str) -> set[str]:
        with self._lock:
            hit = self._cache.get(group_id)
            if hit and self.clock() - hit[0] < self.ttl:
                return hit[1]
        try:
            users = set(self.client.usergroups_users_list(usergroup=group_id)["users"])
        except SlackApiError as exc:
            log.warning("usergroups.users.list %s failed: %s", group_id, exc.response.get("error"))
            return hit[1] if hit else set()
        with self._lock:
            self._cache[group_id] = (self.clock(), users)
        return users
