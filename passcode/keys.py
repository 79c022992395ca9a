"""Typed application and request state: the ``web.AppKey``s and ``web.RequestKey``s, and
nothing else.

Each key's type is named in its annotation and imported only for the type checker, so this
module imports nothing of the package at run time and any floor may read the keys without an
import running up (aiohttp needs no type at run time: it only shows one in a key's repr).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from passcode.config import Settings
    from passcode.domain.identity import IdTokenVerifier
    from passcode.domain.privacy import Sealer
    from passcode.service.access import Actor
    from passcode.service.cards import CardService
    from passcode.service.catalogs import CatalogWatcher
    from passcode.service.checkins import Checkins, VenuePosters
    from passcode.service.citizen import CitizenService
    from passcode.service.devidp import DevIdentityProvider
    from passcode.service.limits import Limiter
    from passcode.service.mydata import MyData
    from passcode.service.oidc import SignIn
    from passcode.service.places import PlaceDirectory
    from passcode.service.riskplaces import RiskPlaceRunner
    from passcode.service.shedding import LoadShedder
    from passcode.service.signing import KeyringHolder
    from passcode.service.trust import TrustHolder
    from passcode.service.verify import Verifier
    from passcode.store.cache import Cache
    from passcode.store.pg import Pool
    from passcode.store.terminals import TerminalDirectory
    from passcode.workers.drain import ScanDrain
    from passcode.workers.supervisor import Supervisor

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
POOL: web.AppKey[Pool] = web.AppKey("pool")
CACHE: web.AppKey[Cache] = web.AppKey("cache")
KEYRING: web.AppKey[KeyringHolder] = web.AppKey("keyring")
SEALER: web.AppKey[Sealer] = web.AppKey("sealer")
ID_TOKENS: web.AppKey[IdTokenVerifier] = web.AppKey("id_tokens")
SIGN_IN: web.AppKey[SignIn] = web.AppKey("sign_in")  # ID tokens, fetching provider keys
DEV_IDP: web.AppKey[DevIdentityProvider] = web.AppKey("dev_idp")  # dev mode only
TERMINALS: web.AppKey[TerminalDirectory] = web.AppKey("terminals")
TERMINAL_LIMITS: web.AppKey[Limiter] = web.AppKey("terminal_limits")
CITIZEN_LIMITS: web.AppKey[Limiter] = web.AppKey("citizen_limits")
VERIFIER: web.AppKey[Verifier] = web.AppKey("verifier")
CITIZENS: web.AppKey[CitizenService] = web.AppKey("citizens")
DRAIN: web.AppKey[ScanDrain] = web.AppKey("drain")
RISK_PLACES: web.AppKey[RiskPlaceRunner] = web.AppKey("risk_places")
SUPERVISOR: web.AppKey[Supervisor] = web.AppKey("supervisor")
SHEDDER: web.AppKey[LoadShedder] = web.AppKey("shedder")
CATALOGS: web.AppKey[CatalogWatcher] = web.AppKey("catalogs")
CARDS: web.AppKey[CardService] = web.AppKey("cards")
PLACES: web.AppKey[PlaceDirectory] = web.AppKey("places")
TRUST: web.AppKey[TrustHolder] = web.AppKey("trust")  # the trust store of foreign signers
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
POSTERS: web.AppKey[VenuePosters] = web.AppKey("posters")  # venue codes (场所码)
CHECKINS: web.AppKey[Checkins] = web.AppKey("checkins")
MY_DATA: web.AppKey[MyData] = web.AppKey("my_data")  # a citizen's copy and its deletion
ACTOR: web.RequestKey[Actor] = web.RequestKey("actor")  # the admin a route table role admitted
