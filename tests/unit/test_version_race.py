"""The concurrency check tells MLflow's version-number collision (a healthy server's answer now and
then, on SQLite and PostgreSQL alike) from every other failure, and tries only the collision again."""

from __future__ import annotations

import pytest

pytest.importorskip("mlflow")

from mlflow.exceptions import RestException

from pytest_hokusai.checks.test_edge import (
    VERSION_RACE_RETRIES,
    _retry_version_races,
    is_version_number_race,
)

# What MLflow 3.11.1 on SQLite answered in a healthy local run (seen 2026-11-30), and what the same
# code path says on PostgreSQL (psycopg2's unique-violation text) and when MLflow's loop gives up.
SQLITE = ("This Session's transaction has been rolled back due to a previous exception during flush. To begin a "
          "new transaction with this Session, first issue Session.rollback(). Original exception was: "
          "(sqlite3.IntegrityError) UNIQUE constraint failed: model_versions.workspace, model_versions.name, "
          "model_versions.version")
POSTGRES = ('(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "model_version_pk" '
            'DETAIL:  Key (name, version)=(m, 3) already exists.')
GAVE_UP = "Model Version creation error (name=m). Giving up after 3 attempts."


def rest(code: str, message: str) -> RestException:
    return RestException({"error_code": code, "message": message})


@pytest.mark.parametrize("message", [SQLITE, POSTGRES, GAVE_UP])
def test_collisions_are_recognised(message):
    assert is_version_number_race(rest("BAD_REQUEST", message))


@pytest.mark.parametrize("exc", [
    rest("BAD_REQUEST", "Registered Model with name=m not found"),
    rest("RESOURCE_DOES_NOT_EXIST", "Registered Model with name=m not found"),
    rest("PERMISSION_DENIED", SQLITE),  # the proxy's refusal, whatever text it quotes
    RuntimeError(SQLITE),  # not MLflow's REST answer (e.g. a connection error's text)
])
def test_other_failures_are_not_collisions(exc):
    assert not is_version_number_race(exc)


def test_a_collision_is_tried_again_and_recorded():
    answers = [rest("BAD_REQUEST", SQLITE), rest("BAD_REQUEST", POSTGRES), "version 7"]
    races: list[str] = []

    def create():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert _retry_version_races(create, races) == "version 7"
    assert len(races) == 2 and "UNIQUE constraint failed" in races[0]


def test_another_failure_is_never_tried_again():
    calls = []

    def create():
        calls.append(1)
        raise rest("TEMPORARILY_UNAVAILABLE", "502 Bad Gateway")

    with pytest.raises(RestException, match="502"):
        _retry_version_races(create, [])
    assert len(calls) == 1


def test_collisions_stop_after_the_retry_budget():
    calls = []

    def create():
        calls.append(1)
        raise rest("BAD_REQUEST", SQLITE)

    races: list[str] = []
    with pytest.raises(RestException, match="UNIQUE constraint"):
        _retry_version_races(create, races)
    assert len(calls) == VERSION_RACE_RETRIES + 1 and len(races) == VERSION_RACE_RETRIES
