"""The fields this client reads from the server's answers, as TypedDicts
named after the schemas of the server's OpenAPI document
(``/api/v1/openapi.json``; ``docs/openapi.json`` in the repository).

Each lists only what the client reads. ``tests/test_contract.py`` checks
every field here against the document, and every ``["key"]`` or
``.get("key")`` read of a value annotated with one of these types against
the type, so a field renamed on one side only fails a test. ``Optional``
marks a field that may be null or absent."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict


class ErrorView(TypedDict):
    code: str
    message: str
    hint: str
    details: Any


class DiagnosticBody(TypedDict):
    code: str
    message: str
    line: int
    column: int


class ErrorBody(TypedDict):
    code: str
    message: str
    hint: str
    details: Optional[Dict[str, Any]]
    diagnostics: Optional[List[DiagnosticBody]]


class TaskView(TypedDict):
    id: str
    state: str
    result: Any
    error: Optional[ErrorView]


class WorkflowView(TypedDict):
    workflow_id: str
    state: str
    error: Optional[ErrorView]
    tasks: List[TaskView]


class WorkflowSummaryView(TypedDict):
    id: str
    name: str
    state: str


class WorkflowList(TypedDict):
    workflows: List[WorkflowSummaryView]


class SubmitResponse(TypedDict):
    workflow_id: str


class StateResponse(TypedDict):
    workflow_id: str
    state: str


class EventHead(TypedDict):
    latest_event_seq: int


class WhoAmI(TypedDict):
    user: str
    role: str


class HealthReport(TypedDict):
    status: str
    providers: Dict[str, Any]
