"""Edge-function source snapshots: the versions a project had, so a bad one can be replaced."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from pydantic import BaseModel

from runbook.ledger.base import LedgerBase
from runbook.ledger.schema import function_snapshots


class FunctionSnapshot(BaseModel):
    """The source of one version of one edge function."""

    project_ref: str
    slug: str
    version: int
    entrypoint_path: str
    body: bytes
    sha256: str


class SnapshotsMixin(LedgerBase):
    """``save_function_snapshot`` and ``previous_function_snapshot``."""

    def save_function_snapshot(
        self,
        project_ref: str,
        slug: str,
        version: int,
        body: bytes,
        entrypoint_path: str = "index.ts",
    ) -> bool:
        """Keep this version's source unless it is kept already. Returns True when newly stored."""
        values = {
            "project_ref": project_ref,
            "slug": slug,
            "version": version,
            "entrypoint_path": entrypoint_path,
            "body": body,
            "sha256": hashlib.sha256(body).hexdigest(),
            "taken_at": self._now(),
        }

        def work(conn: sa.Connection) -> bool:
            # insert-or-ignore: two watchers saving the same version at once both succeed
            stmt = self._insert(conn, function_snapshots).values(**values).on_conflict_do_nothing()
            return bool(conn.execute(stmt).rowcount)

        return self._write(work)

    def previous_function_snapshot(
        self, project_ref: str, slug: str, before_version: int
    ) -> FunctionSnapshot | None:
        """The newest kept version older than ``before_version`` (the one to go back to), or None."""
        query = (
            sa.select(function_snapshots)
            .where(
                function_snapshots.c.project_ref == project_ref,
                function_snapshots.c.slug == slug,
                function_snapshots.c.version < before_version,
            )
            .order_by(function_snapshots.c.version.desc())
            .limit(1)
        )

        def work(conn: sa.Connection) -> FunctionSnapshot | None:
            row = conn.execute(query).mappings().first()
            return None if row is None else FunctionSnapshot.model_validate(dict(row))

        return self._read(work)
