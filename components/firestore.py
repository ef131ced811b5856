"""The Firestore Native database that keeps every chat conversation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from components.resource_ids import fixed_id_options

# The chat app's collection (app/chat/history.py) and the fields its conversation list uses.
SESSIONS_COLLECTION = "chat_sessions"
MESSAGES_COLLECTION = "messages"
# The timestamp the app writes on every document when a retention is set; TTL deletes by it.
EXPIRE_FIELD = "expire_at"


@dataclass(frozen=True)
class ChatHistoryDatabaseArgs:
    """Where the database lives and whether `pulumi destroy` may delete it."""

    project_id: pulumi.Input[str]
    database: str = "chat-app-db"
    location: str = "nam5"
    delete_protection: bool = True
    # Set, Firestore deletes conversations and messages once their `expire_at` has passed
    # (the app sets it this many days after each write). TTL deletion runs within a day.
    ttl_days: int | None = None
    depends_on: Sequence[pulumi.Resource] = ()


class ChatHistoryDatabase(pulumi.ComponentResource):
    """A Firestore Native database, protected from deletion unless config says otherwise."""

    database: gcp.firestore.Database
    sessions_index: gcp.firestore.Index
    ttl_fields: list[gcp.firestore.Field]
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
        self.ttl_fields = [
            gcp.firestore.Field(
                f"{name}-{collection.replace('_', '-')}-ttl",
                project=args.project_id,
                database=self.database.name,
                collection=collection,
                field=EXPIRE_FIELD,
                ttl_config=gcp.firestore.FieldTtlConfigArgs(),
                # A timestamp nobody queries: exempt from indexing, as Google advises for TTL.
                index_config=gcp.firestore.FieldIndexConfigArgs(),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for collection in (SESSIONS_COLLECTION, MESSAGES_COLLECTION)
            if args.ttl_days is not None
        ]
        self.name = self.database.name
        self.register_outputs({"name": self.name})
