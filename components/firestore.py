"""The Firestore Native database that keeps every chat conversation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from components.resource_ids import fixed_id_options

# The chat app's collection (app/chat/history.py) and the fields its conversation list uses.
SESSIONS_COLLECTION = "chat_sessions"


@dataclass(frozen=True)
class ChatHistoryDatabaseArgs:
    """Where the database lives and whether `pulumi destroy` may delete it."""

    project_id: pulumi.Input[str]
    database: str = "chat-app-db"
    location: str = "nam5"
    delete_protection: bool = True
    depends_on: Sequence[pulumi.Resource] = ()


class ChatHistoryDatabase(pulumi.ComponentResource):
    """A Firestore Native database, protected from deletion unless config says otherwise."""

    database: gcp.firestore.Database
    sessions_index: gcp.firestore.Index
    name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: ChatHistoryDatabaseArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gemma-stack:firestore:ChatHistoryDatabase", name, None, opts)
        if not args.database or args.database == "(default)":
            raise ValueError(
                f"ChatHistoryDatabase {name!r}: name a dedicated database (e.g. chat-app-db); "
                "the project's (default) database may hold other data."
            )
        self.database = gcp.firestore.Database(
            f"{name}-database",
            project=args.project_id,
            name=args.database,
            location_id=args.location,
            type="FIRESTORE_NATIVE",
            concurrency_mode="OPTIMISTIC",
            delete_protection_state=(
                "DELETE_PROTECTION_ENABLED"
                if args.delete_protection
                else "DELETE_PROTECTION_DISABLED"
            ),
            # With protection off, `pulumi destroy` really deletes the chats (a dev stack).
            deletion_policy="ABANDON" if args.delete_protection else "DELETE",
            opts=fixed_id_options(
                pulumi.ResourceOptions(
                    parent=self, depends_on=list(args.depends_on), protect=args.delete_protection
                )
            ),
        )
        # "My conversations, newest first" filters on owner and sorts on updated_at, a query
        # Firestore serves only with this composite index.
        self.sessions_index = gcp.firestore.Index(
            f"{name}-sessions-by-owner",
            project=args.project_id,
            database=self.database.name,
            collection=SESSIONS_COLLECTION,
            query_scope="COLLECTION",
            fields=[
                gcp.firestore.IndexFieldArgs(field_path="owner", order="ASCENDING"),
                gcp.firestore.IndexFieldArgs(field_path="updated_at", order="DESCENDING"),
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.name = self.database.name
        self.register_outputs({"name": self.name})
