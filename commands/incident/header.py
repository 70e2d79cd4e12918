"""The incident's header message: built from the incident as it stands, and edited in place.

Commands (`/incident check`, `close`) and the audit log (an event ticking a checklist step) both
refresh it; the Reply decides whether it can still edit the message it was posted as.
"""

from __future__ import annotations

import logging

from commands.chat.context import Services
from commands.chat.reply import Reply
from commands.incident.messages import IncidentHeader
from state import incidents as state

log = logging.getLogger(__name__)


def header_for(services: Services, incident: state.Incident) -> IncidentHeader:
    cfg = services.settings.incidents
    return IncidentHeader(incident, cfg.zone, cfg.rpo_hours, cfg.rto_hours(incident.severity), cfg.emoji)


def refresh_header(services: Services, incident_id: int, reply: Reply) -> None:
    """Edit the header message to show the incident as it stands now; failures are logged, not raised."""
    try:
        incident = state.get_incident(services.store, incident_id)
        if incident is not None and incident.header_message_id:  # the adapter knows which ids it can still edit
            reply.update(incident.header_message_id, header_for(services, incident))
    except Exception:
        log.exception("could not refresh the header of incident #%s", incident_id)
