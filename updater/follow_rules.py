"""Follows (issue 28): a rule that follows a Civitai creator, a saved Browse search or a tag,
and where rules and what their checks found are kept (tables `follows`, `follow_seen`,
`follow_taken`; schema.py)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlite_utils import Database

from database import Store, utcnow
from sources.browse import PERIODS, SORTS
from sources.bulk import BulkFilter

KINDS = ("username", "query", "tag")


class FollowRule(BaseModel):
    """POST /api/follows: what to follow (one of `username`, `query`, `tag`), how to filter what
    it lists, and what to do with a new model (`mode`)."""

    model_config = ConfigDict(extra="forbid")

    username: str | None = Field(None, max_length=100, description="A Civitai creator.")
    query: str | None = Field(None, max_length=200, description="A saved Browse search's words.")
    tag: str | None = Field(None, max_length=100, description="A Civitai tag.")
    types: list[str] = Field([], max_length=16, description="Civitai's types: LORA, Checkpoint…")
    baseModels: list[str] = Field(  # noqa: N815
        [], max_length=16, description='Base models as Civitai names them: "SDXL 1.0", …'
    )
    sort: str | None = Field(None, description="The saved search's sort (checks walk Newest).")
    period: str | None = Field(None, description="The saved search's period.")
    mode: Literal["notify", "download"] = Field(
        "notify", description="notify: list and notify; download: queue each new model."
    )
    track: bool = Field(False, strict=True, description="Track each download for updates.")
    max_size: int | None = Field(
        None, gt=0, strict=True, description="Leave out a model whose file is larger (bytes)."
    )
    nsfw: bool = Field(
        False, strict=True, description="NSFW models too (only while show_nsfw is on)."
    )
    backlog: Literal["skip", "take"] = Field(
        "skip",
        description="The first check: skip (record what exists as seen) or take (treat every "
        "model listed now as new).",
    )

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return BulkFilter._username(value)  # the bulk download's rule for a creator's name

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or not value.isprintable()):
            raise ValueError("must be a tag as Civitai shows it, e.g. anime")
        return None if value is None else value.strip()

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise ValueError("must be words to search for, as typed in Browse")
        return value

    @field_validator("types")
    @classmethod
    def _types(cls, values: list[str]) -> list[str]:
        return BulkFilter._types(values)

    @field_validator("baseModels")
    @classmethod
    def _base_models(cls, values: list[str]) -> list[str]:
        if not all(v.isprintable() for v in values):
            raise ValueError('each is a base model name as Civitai writes it, e.g. "SDXL 1.0"')
        return BulkFilter._base_models(values)

    @field_validator("sort")
    @classmethod
    def _sort(cls, value: str | None) -> str | None:
        if value is not None and value not in SORTS:
            raise ValueError(f"must be one of {', '.join(SORTS)}")
        return value

    @field_validator("period")
    @classmethod
    def _period(cls, value: str | None) -> str | None:
        if value is not None and value not in PERIODS:
            raise ValueError(f"must be one of {', '.join(PERIODS)}")
        return value

    @model_validator(mode="after")
    def _one_subject(self) -> FollowRule:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("A follow names one of username, query or tag")
        if self.query is not None:
            self.query = self.query.strip()
            if not (self.query or self.types or self.baseModels):
                raise ValueError("A followed search needs words, types or baseModels")
        elif self.sort is not None or self.period is not None:
            raise ValueError("sort and period belong to a followed search (query)")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def subject(self) -> str:
        return str(getattr(self, self.kind))

    def title(self) -> str:
        """How a person names it: creator X, search "Y", tag Z."""
        if self.kind == "username":
            return f"creator {self.username}"
        if self.kind == "tag":
            return f"tag {self.tag}"
        return (
            f'search "{self.query}"'
            if self.query
            else "search " + "/".join(self.types + self.baseModels)
        )


class FollowChange(BaseModel):
    """PATCH /api/follows/{id}: the fields to change (what is followed stays)."""

    model_config = ConfigDict(extra="forbid")

    types: list[str] | None = None
    baseModels: list[str] | None = None  # noqa: N815
    sort: str | None = None
    period: str | None = None
    mode: Literal["notify", "download"] | None = None
    track: bool | None = Field(None, strict=True)
    max_size: int | None = Field(None, gt=0, strict=True)
    nsfw: bool | None = Field(None, strict=True)


def rule_of(row: dict[str, Any]) -> FollowRule:
    return FollowRule.model_validate_json(row["rule"])


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A stored follow as the API answers it."""
    rule = rule_of(row)
    return {
        "id": row["id"],
        "kind": rule.kind,
        "title": rule.title(),
        **rule.model_dump(),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "last_check": row["checked_at"],
        "last_full_pass": row["full_pass_at"],
        "last_result": json.loads(row["last_result"]) if row["last_result"] else None,
    }


class FollowStore:
    """The follows and their memory, on the store's writer and reader threads."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, rule: FollowRule) -> dict[str, Any]:
        def op(db: Database) -> dict[str, Any]:
            now = utcnow()
            row = {"rule": rule.model_dump_json(), "created_at": now, "updated_at": now}
            pk = db["follows"].insert(row).last_pk
            return dict(db["follows"].get(pk))

        return await self.store.run(op)

    async def all(self) -> list[dict[str, Any]]:
        return await self.store.read(
            lambda db: [dict(r) for r in db.query("select * from follows order by id")]
        )

    async def get(self, follow_id: int) -> dict[str, Any] | None:
        def op(db: Database) -> dict[str, Any] | None:
            rows = list(db.query("select * from follows where id = ?", [follow_id]))
            return dict(rows[0]) if rows else None

        return await self.store.read(op)

    async def change(self, follow_id: int, rule: FollowRule) -> dict[str, Any]:
        def op(db: Database) -> dict[str, Any]:
            fields = {"rule": rule.model_dump_json(), "updated_at": utcnow()}
            return dict(db["follows"].update(follow_id, fields).get(follow_id))

        return await self.store.run(op)

    async def delete(self, follow_id: int) -> None:
        def op(db: Database) -> None:
            with db.atomic():
                for table in ("follow_seen", "follow_taken"):
                    db.execute(f"delete from {table} where follow_id = ?", [follow_id])
                db.execute("delete from follows where id = ?", [follow_id])

        await self.store.run(op)

    async def seen(self, follow_id: int) -> dict[int, int]:
        """Model id → its newest version id when the follow last saw it."""
        query = "select modelId, versionId from follow_seen where follow_id = ?"
        return await self.store.read(
            lambda db: {r[0]: r[1] for r in db.execute(query, [follow_id]).fetchall()}
        )

    async def taken(self, follow_id: int | None = None) -> list[dict[str, Any]]:
        """The versions a follow took or holds (every follow's with None)."""
        where, args = ("where follow_id = ?", [follow_id]) if follow_id else ("", [])
        return await self.store.read(
            lambda db: [dict(r) for r in db.query(f"select * from follow_taken {where}", args)]
        )

    async def record(
        self,
        follow_id: int,
        seen: dict[int, int],
        taken: list[dict[str, Any]],
        result: dict[str, Any] | None,
        full_pass: bool,
    ) -> None:
        """A check's findings in one transaction: models seen, versions taken or held (a held
        one replaced once it is taken), and the check's result."""

        def op(db: Database) -> None:
            now = utcnow()
            with db.atomic():
                db["follow_seen"].upsert_all(
                    [
                        {"follow_id": follow_id, "modelId": m, "versionId": v}
                        for m, v in seen.items()
                    ],
                    pk=("follow_id", "modelId"),
                )
                rows = [{"follow_id": follow_id, "found_at": now} | t for t in taken]
                db["follow_taken"].upsert_all(rows, pk=("follow_id", "modelVersionId"))
                if result is not None:
                    fields = {"checked_at": now, "last_result": json.dumps(result)}
                    if full_pass:
                        fields["full_pass_at"] = now
                    db["follows"].update(follow_id, fields)

        await self.store.run(op)
