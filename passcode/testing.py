"""Builders the tests, ``passcode seed`` and the load tests (``loadtest/``) share.

What a citizen declares (``POST /v1/declarations`` bodies), the made-up name of a seeded
citizen, a bearer header and a free loopback port: each written once here, so a seeded citizen,
a Locust user and a test citizen are built alike. Pure but for :func:`free_port`; it imports
only ``domain``, so ``seed`` may use it and the tests never need to be imported by ``passcode``.
"""

from __future__ import annotations

import hashlib
import socket
from typing import Any

from passcode.domain.model import Color
from passcode.domain.rules import Policy

HEALTHY: dict[str, Any] = {
    "temperature_c": 36.6,
    "symptoms": [],
    "regions_visited": [],
    "close_contact": False,
}
"""A healthy declaration: green under the default fever threshold."""
FEVER: dict[str, Any] = {**HEALTHY, "temperature_c": 38.5}
"""A fever (yellow under the default threshold), nothing else."""
CLOSE_CONTACT: dict[str, Any] = {**HEALTHY, "close_contact": True}
"""A close contact (red), no fever."""

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏辉建国志新峰文斌宇浩凯晨欣怡梓涵子轩博雨婷佳琪思远嘉俊"
_LATIN_FIRST = ("John", "Mary", "Ahmed", "Li", "Anna", "Omar", "Sofia", "Ivan", "Yuki", "Maria")
_LATIN_LAST = ("Smith", "Garcia", "Khan", "Wong", "Müller", "Rossi", "Silva", "Kim", "Sato", "Ng")


def declaration_bodies(policy: Policy) -> dict[Color, dict[str, Any]]:
    """The API body (``POST /v1/declarations``) a citizen of each colour declares.

    Yellow is a fever, red a close contact; temperatures follow the policy's threshold.
    """
    healthy = min(36.5, round(policy.fever_threshold - 1.0, 1))
    fever = max(38.5, round(policy.fever_threshold + 1.0, 1))
    return {
        Color.GREEN: {**HEALTHY, "temperature_c": healthy},
        Color.YELLOW: {**HEALTHY, "temperature_c": fever},
        Color.RED: {**CLOSE_CONTACT, "temperature_c": healthy},
    }


def full_name(user_id: str) -> str:
    """A stable made-up full name for a seeded user id (only its mask is ever stored).

    Load tests mint ID tokens with this name, so a re-declaration keeps the stored mask.
    """
    digest = hashlib.sha256(user_id.encode()).digest()
    if digest[0] < 26:  # about one in ten: a Latin-script name
        return f"{_LATIN_FIRST[digest[1] % 10]} {_LATIN_LAST[digest[2] % 10]}"
    given = _GIVEN[digest[2] % len(_GIVEN)]
    if digest[3] % 3:
        given += _GIVEN[digest[4] % len(_GIVEN)]
    return _SURNAMES[digest[1] % len(_SURNAMES)] + given


def auth(token: str) -> dict[str, str]:
    """The ``Authorization`` header presenting ``token`` (a key or an ID token) as a bearer."""
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    """A loopback TCP port free at the time of asking, for a server a test or bench starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
