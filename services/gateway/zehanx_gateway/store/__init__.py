"""The registry in PostgreSQL, one module per aggregate.

- :mod:`.jobs`: jobs, their transitions and events, and the workers' leases (the compare-and-set core);
- :mod:`.models`: models, the datasets jobs built, and uploads;
- :mod:`.users`: users, API keys, sealed provider keys and user settings;
- :mod:`.accounts`: the embedded sign-in's accounts, attempts and sessions, and the sessions' key;
- :mod:`.base`: the translation of database errors into domain errors, advisory-lock keys, keyset pages.

Every method that a user can reach takes the caller's ``user_id`` and filters by it, so another user's
row is simply not found (NOT_FOUND, never PERMISSION_DENIED: ids do not leak). The services take the
store they need through their own port (``jobs.JobStore``, ``models.ModelStore``, ...).
"""

from __future__ import annotations

from zehanx_gateway.store.jobs import PostgresJobStore
from zehanx_gateway.store.models import PostgresModelStore
from zehanx_gateway.store.users import PostgresUserStore

__all__ = ["PostgresJobStore", "PostgresModelStore", "PostgresRegistry", "PostgresUserStore"]


class PostgresRegistry(PostgresJobStore, PostgresModelStore, PostgresUserStore):
    """Every aggregate over one connection pool: what the gateway opens once and hands to each service."""
