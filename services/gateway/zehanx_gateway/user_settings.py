"""A user's settings (``UserSettings``, stored as its JSON form, one row per user; defaults when none)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from zehanx_gateway.domain import Principal, UserSettings


class UserSettingsStore(Protocol):
    async def get_user_settings(self, user_id: uuid.UUID) -> UserSettings: ...

    async def put_user_settings(self, user_id: uuid.UUID, settings: dict[str, Any]) -> UserSettings: ...


class UserSettingsService:
    def __init__(self, store: UserSettingsStore) -> None:
        self._store = store

    async def get(self, principal: Principal) -> UserSettings:
        return await self._store.get_user_settings(principal.user_id)

    async def replace(self, principal: Principal, settings: Mapping[str, Any]) -> UserSettings:
        return await self._store.put_user_settings(principal.user_id, dict(settings))
