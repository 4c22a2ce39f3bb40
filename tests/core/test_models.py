"""Core models: the incident lifecycle allows only legal transitions; references parse."""

from __future__ import annotations

import pytest

from runbook.errors import InvalidTransition
from runbook.models import (
    TRANSITIONS,
    Diagnosis,
    Hypothesis,
    IncidentStatus,
    Severity,
    check_transition,
    incident_key,
    parse_incident_ref,
)

S = IncidentStatus


def test_happy_path_is_legal() -> None:
    """detected -> triaging -> mitigating -> monitoring -> resolved -> closed -> reviews is allowed."""
    path = [
        S.DETECTED,
        S.TRIAGING,
        S.MITIGATING,
        S.MONITORING,
        S.RESOLVED,
        S.CLOSED,
        S.REVIEW_SCHEDULED,
        S.REVIEWED,
    ]
    for a, b in zip(path, path[1:], strict=False):
        check_transition(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (S.DETECTED, S.CLOSED),
        (S.RESOLVED, S.MONITORING),
        (S.REVIEWED, S.DETECTED),
        (S.CLOSED, S.CLOSED),
    ],
)
def test_illegal_moves_are_refused(a, b) -> None:
    """Skipping or reversing the lifecycle raises InvalidTransition naming the allowed moves."""
    with pytest.raises(InvalidTransition, match="may go to"):
        check_transition(a, b)


def test_every_status_has_a_rule() -> None:
    """The transition table covers every status."""
    assert set(TRANSITIONS) == set(IncidentStatus)


def test_open_statuses() -> None:
    """Only the states before resolution count as open."""
    assert {s for s in S if s.is_open} == {S.DETECTED, S.TRIAGING, S.MITIGATING, S.MONITORING}


def test_severity_order() -> None:
    """P0 is more severe than P1, which is more severe than P3."""
    assert Severity.P0.is_higher_than(Severity.P1)
    assert not Severity.P3.is_higher_than(Severity.P2)


@pytest.mark.parametrize(("ref", "n"), [(42, 42), ("42", 42), ("INC-42", 42), ("inc-7", 7)])
def test_incident_refs(ref, n) -> None:
    """Numbers and INC-<n> references parse to the same id, and render back as INC-<n>."""
    assert parse_incident_ref(ref) == n
    assert incident_key(n) == f"INC-{n}"


@pytest.mark.parametrize("ref", ["INC-", "abc", "INC-4x"])
def test_bad_refs(ref) -> None:
    """A reference that is not a number says what one looks like."""
    with pytest.raises(ValueError, match="INC-<number>"):
        parse_incident_ref(ref)


def test_diagnosis_top() -> None:
    """The top hypothesis is the best-scored one."""
    d = Diagnosis(
        hypotheses=[Hypothesis(scenario="a", score=0.2), Hypothesis(scenario="b", score=0.9)]
    )
    assert d.top is not None and d.top.scenario == "b"
    assert Diagnosis().top is None
