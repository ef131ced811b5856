"""The chat history database: Firestore Native chat-app-db in nam5, protected unless told not."""

from __future__ import annotations

from tests.pulumi_harness import run_program


def test_protected_by_default() -> None:
    run = run_program(overrides={"gemma-stack:firestoreDeleteProtection": None})
    db = run.one("gcp:firestore/database:Database")
    assert db.inputs["name"] == "chat-app-db-dev"
    assert db.inputs["locationId"] == "nam5"
    assert db.inputs["type"] == "FIRESTORE_NATIVE"
    assert db.inputs["deleteProtectionState"] == "DELETE_PROTECTION_ENABLED"
    assert db.inputs["deletionPolicy"] == "ABANDON"
    assert db.options["protect"] is True
    assert db.parent_type == "gemma-stack:firestore:ChatHistoryDatabase"


def test_dev_stack_can_be_destroyed() -> None:
    db = run_program().one("gcp:firestore/database:Database")
    assert db.inputs["deleteProtectionState"] == "DELETE_PROTECTION_DISABLED"
    assert db.inputs["deletionPolicy"] == "DELETE"
    assert db.options["protect"] is False


def test_name_and_location_from_config() -> None:
    run = run_program(
        overrides={
            "gemma-stack:firestoreDatabase": "team-chats",
            "gemma-stack:firestoreLocation": "eur3",
        }
    )
    db = run.one("gcp:firestore/database:Database")
    assert (db.inputs["name"], db.inputs["locationId"]) == ("team-chats", "eur3")
    assert run.outputs["firestoreDatabase"] == "team-chats"


def test_no_database_without_the_chat_app() -> None:
    run = run_program(overrides={"gemma-stack:chatAppEnabled": False})
    assert not run.of_type("gcp:firestore/database:Database")


def test_a_retention_sets_firestore_ttl_and_tells_the_app() -> None:
    run = run_program(overrides={"gemma-stack:chatHistoryTtlDays": 30})
    fields = run.of_type("gcp:firestore/field:Field")
    assert sorted(f.inputs["collection"] for f in fields) == ["chat_sessions", "messages"]
    for field in fields:
        assert field.inputs["field"] == "expire_at"  # what app/chat/history.py writes
        assert "ttlConfig" in field.inputs
        assert field.inputs["database"] == "chat-app-db-dev"
    (container,) = run.named("chat-deployment").inputs["spec"]["template"]["spec"]["containers"]
    assert {"name": "HISTORY_TTL_DAYS", "value": "30"} in container["env"]
    assert not run_program().of_type("gcp:firestore/field:Field")


def test_conversation_list_has_its_composite_index() -> None:
    index = run_program().one("gcp:firestore/index:Index")
    assert index.inputs["database"] == "chat-app-db-dev"
    # The chat app lists a user's conversations with this exact filter and sort.
    assert index.inputs["collection"] == "chat_sessions"
    assert [(f["fieldPath"], f["order"]) for f in index.inputs["fields"]] == [
        ("owner", "ASCENDING"),
        ("updated_at", "DESCENDING"),
    ]
    assert index.parent_type == "gemma-stack:firestore:ChatHistoryDatabase"
