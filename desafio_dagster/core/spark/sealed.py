"""Secrets for Spark's tasks, sealed: the password and the AWS credentials a task needs travel inside the job
encrypted (Fernet: AES with an HMAC) with a key that only the driver's process and the executors hold.
Spark Connect cannot set a session's executor environment (spark.executorEnv.* is static), and a value in
the job itself would show in its plan: sealed, it is only noise there. Pure: no Dagster.

The key: DESAFIO_TASK_SECRET in the executors' environment. The project's Connect server makes one when it
starts (connect_server.py); a server of your own needs the same value in its executors and in the client's
environment.
"""

from __future__ import annotations

import json
import os

from desafio_dagster.core.errors import DesafioError

TASK_KEY_VARIABLE = "DESAFIO_TASK_SECRET"  # "SECRET" in the name: Spark redacts it in its UI and event log
_SET_BY_SEAL = "DESAFIO_TASK_SEALED_NAMES"  # the names the last unsealed environment set in this worker


class SealedEnvironmentError(DesafioError):
    """A task could not open its sealed environment."""


def new_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def seal(environment: dict[str, str], key: str) -> str:
    """environment as a token only key opens; empty if there is nothing to seal."""
    if not environment:
        return ""
    from cryptography.fernet import Fernet

    return Fernet(key.encode()).encrypt(json.dumps(environment).encode()).decode()


def unseal_into_environment(token: str) -> None:
    """In a task: set the sealed variables in this worker's environment (libpq and the AWS SDKs read them
    there), and remove those that an earlier job's token set and this one does not (workers are reused)."""
    environment: dict[str, str] = {}
    if token:
        from cryptography.fernet import Fernet, InvalidToken

        key = os.environ.get(TASK_KEY_VARIABLE, "")
        if not key:
            raise SealedEnvironmentError(
                f"the Spark executors have no {TASK_KEY_VARIABLE}, so this task cannot open the credentials it was "
                f"sent: give the Connect server's executors the same {TASK_KEY_VARIABLE} as the client")
        try:
            environment = json.loads(Fernet(key.encode()).decrypt(token.encode()))
        except (InvalidToken, ValueError):
            raise SealedEnvironmentError(
                f"the credentials sent to this task were sealed with another key than the executors' "
                f"{TASK_KEY_VARIABLE}: give the client and the Connect server's executors the same value") from None
    for name in os.environ.get(_SET_BY_SEAL, "").split(","):
        if name and name not in environment:
            os.environ.pop(name, None)
    os.environ.update(environment)
    os.environ[_SET_BY_SEAL] = ",".join(environment)
