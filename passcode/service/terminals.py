"""Terminal use cases: register one (its key shown once) and revoke one, each audited.

The API and the CLI both call these, so each change and its audit entry commit in one
transaction whoever makes it: no terminal exists, or is revoked, that the audit log does not name.
"""

from __future__ import annotations

import uuid

from passcode.store import audit, terminals
from passcode.store.pg import Pool, acquire
from passcode.store.terminals import KEY_PREFIX, NewTerminal, Terminal, TerminalDirectory

# Re-exported store types appear in the api's signatures; the api imports no store module.
__all__ = ["KEY_PREFIX", "NewTerminal", "Terminal", "register_terminal", "revoke_terminal"]


async def register_terminal(pool: Pool, place: str, *, actor: str, timeout: float) -> NewTerminal:
    """A new terminal at ``place``; audited (``terminal.add``) in the same transaction."""
    async with acquire(pool, "add terminal", timeout) as conn, conn.transaction():
        created = await terminals.insert_terminal(conn, place)
        await audit.append(
            conn,
            actor=actor,
            action="terminal.add",
            target={"terminal_id": str(created.id), "place": created.place},
            rows=1,
        )
    return created


async def revoke_terminal(
    pool: Pool,
    terminal_id: uuid.UUID,
    *,
    actor: str,
    timeout: float,
    directory: TerminalDirectory | None = None,
) -> bool:
    """Revoke the terminal, audited (``terminal.revoke``) in the same transaction; False (and
    nothing recorded) when there is no such terminal. ``directory``, this process's cache of
    terminals, forgets it at once (others within their cache's lifetime)."""
    async with acquire(pool, "revoke terminal", timeout) as conn, conn.transaction():
        found = await terminals.revoke_terminal(conn, terminal_id)
        if found:
            await audit.append(
                conn,
                actor=actor,
                action="terminal.revoke",
                target={"terminal_id": str(terminal_id)},
                rows=1,
            )
    if found and directory is not None:
        directory.forget(terminal_id)
    return found
