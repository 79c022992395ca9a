"""Typed application state: the ``web.AppKey``s, and nothing else.

Only the api layer and ``app.py`` import this module, so importing the state types here makes
no cycle.
"""

from __future__ import annotations

import asyncpg
from aiohttp import web

from passcode.config import Settings
from passcode.domain.identity import IdTokenVerifier
from passcode.domain.privacy import Sealer
from passcode.service.citizen import CitizenService
from passcode.service.limits import Limiter
from passcode.service.riskplaces import RiskPlaceRunner
from passcode.service.signing import KeyringHolder
from passcode.service.verify import Verifier
from passcode.store.cache import Cache
from passcode.store.terminals import TerminalDirectory
from passcode.workers.drain import ScanDrain
from passcode.workers.supervisor import Supervisor

SETTINGS = web.AppKey("settings", Settings)
POOL: web.AppKey[asyncpg.Pool[asyncpg.Record]] = web.AppKey("pool")
CACHE = web.AppKey("cache", Cache)
KEYRING = web.AppKey("keyring", KeyringHolder)
SEALER = web.AppKey("sealer", Sealer)
ID_TOKENS = web.AppKey("id_tokens", IdTokenVerifier)
TERMINALS = web.AppKey("terminals", TerminalDirectory)
TERMINAL_LIMITS = web.AppKey("terminal_limits", Limiter)
CITIZEN_LIMITS = web.AppKey("citizen_limits", Limiter)
VERIFIER = web.AppKey("verifier", Verifier)
CITIZENS = web.AppKey("citizens", CitizenService)
DRAIN = web.AppKey("drain", ScanDrain)
RISK_PLACES = web.AppKey("risk_places", RiskPlaceRunner)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
