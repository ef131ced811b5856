"""Recognise secrets written as literal environment values or command-line arguments."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .core import is_unknown

# An env var whose name ends in a credential word (HF_TOKEN, OPENAI_API_KEY, DB_PASSWORD);
# names that merely mention one (ID_TOKEN_SERVICE_ACCOUNT, HF_TOKEN_PATH, MAX_TOKENS) don't.
_SECRET_NAME = re.compile(
    r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIALS?|APIKEY|KEY)$", re.IGNORECASE
)

# Values that are credentials whatever the variable is called.
_SECRET_VALUE = re.compile(
    r"hf_[A-Za-z0-9]{30,}"  # Hugging Face access token
    r"|AIza[0-9A-Za-z_\-]{35}"  # Google API key
    r"|ya29\.[0-9A-Za-z_\-]{20,}"  # Google OAuth access token
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|\"private_key\"\s*:"  # service account key JSON
    r"|gh[pousr]_[A-Za-z0-9]{36}"  # GitHub token
    r"|sk-[A-Za-z0-9_\-]{20,}"  # OpenAI-style API key
)
# Flags that take a credential; `$(VAR)` / `${VAR}` refer to an env var and are fine.
_SECRET_FLAG = re.compile(r"^--?(hf[-_]token|token|api[-_]key|password|secret)(=(.*))?$", re.I)
_ENV_REFERENCE = re.compile(r"^\$[({][A-Za-z_][A-Za-z0-9_]*[)}]$")
# An absolute path under a credential name (GOOGLE_APPLICATION_CREDENTIALS=/var/secrets/sa.json)
# points at a mounted secret file, which is how secrets should arrive.
_FILE_PATH = re.compile(r"^/\S*$")
# A Secret Manager secret's resource name (HF_TOKEN_SECRET=projects/P/secrets/S) is a
# reference too: the workload reads the value with its own identity.
_SECRET_MANAGER_NAME = re.compile(r"^projects/[^/\s]+/secrets/[^/\s]+(/versions/[^/\s]+)?$")


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def looks_like_secret(value: str) -> bool:
    return bool(_SECRET_VALUE.search(value))


def literal_secret_envs(envs: Iterable[Any]) -> list[str]:
    """Names of env entries ({name, value}) that carry a credential as a literal value."""
    found: list[str] = []
    for env in envs:
        if not isinstance(env, Mapping):
            continue
        name = str(env.get("name", ""))
        value = env.get("value")
        if not isinstance(value, str) or value == "" or is_unknown(value):
            continue
        reference = _FILE_PATH.match(value) or _SECRET_MANAGER_NAME.match(value)
        if (is_secret_name(name) and not reference) or looks_like_secret(value):
            found.append(name)
    return found


def literal_secret_args(args: Iterable[Any]) -> list[str]:
    """Command-line flags (or bare values) that pass a credential literally."""
    found: list[str] = []
    items = [a for a in args if isinstance(a, str)]
    for i, arg in enumerate(items):
        flag = _SECRET_FLAG.match(arg)
        if flag:
            value = flag.group(3) if flag.group(2) else (items[i + 1] if i + 1 < len(items) else "")
            literal = value and not value.startswith("-") and not _ENV_REFERENCE.match(value)
            if literal and not is_unknown(value):
                found.append(arg.split("=", 1)[0])
        elif looks_like_secret(arg):
            found.append(f"argument #{i}")
    return found
