"""The synchronous client. Every call has a timeout; every failure is a
:class:`~gleitzeit.errors.GleitzeitError` with the server's GZ code."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

from .errors import GleitzeitError, WorkflowFailed, timed_out, unreachable
from .schemas import HealthReport, StateResponse, SubmitResponse, TaskView, WhoAmI, WorkflowList, WorkflowView
from .workflow import Workflow

DEFAULT_URL = "http://127.0.0.1:8765"
TERMINAL = ("workflow_completed", "workflow_failed", "workflow_cancelled")
EVENT_TYPES = (
    "workflow_started", "workflow_progress", "workflow_completed", "workflow_failed",
    "workflow_cancelled", "task_started", "task_completed", "task_failed", "task_retrying",
    "task_skipped", "task_cancelled", "llm_token", "task_output",
    "agent_turn", "tool_call_started", "tool_call_completed",
)

WorkflowSource = Union[str, pathlib.Path, Dict[str, Any], Workflow]


class Event(dict):
    """An event's data (``event['task_name']``, ``event['result']`` …) with
    ``type``, ``seq``, ``workflow_id`` and ``at_ms`` as attributes."""

    def __init__(self, raw: Dict[str, Any]) -> None:
        super().__init__(raw.get("data") or {})
        self.type: str = raw.get("type", "")
        self.seq: int = int(raw.get("seq", 0))
        self.workflow_id: str = raw.get("workflow_id", "")
        self.at_ms: int = int(raw.get("at_ms", 0))
        self.setdefault("workflow_id", self.workflow_id)

    def __repr__(self) -> str:
        return f"Event({self.type!r}, seq={self.seq}, {dict.__repr__(self)})"


def _document(workflow: WorkflowSource) -> str:
    """Workflow text for the request body: YAML/JSON text, a file, a dict or a builder."""
    if isinstance(workflow, Workflow):
        return json.dumps(workflow.to_dict())
    if isinstance(workflow, dict):
        return json.dumps(workflow)
    if isinstance(workflow, pathlib.Path):
        return workflow.read_text(encoding="utf-8")
    if isinstance(workflow, str):
        looks_like_path = "\n" not in workflow and workflow.endswith((".yaml", ".yml", ".json"))
        if looks_like_path:
            return pathlib.Path(workflow).read_text(encoding="utf-8")
        return workflow
    raise TypeError(f"cannot submit a {type(workflow).__name__} as a workflow")


class Client:
    """Talks to ``gleitzeit serve``.

    ``url`` defaults to GLEITZEIT_SERVER (else http://127.0.0.1:8765) and
    ``api_key`` to GLEITZEIT_API_KEY.
    """

    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None, timeout: float = 30.0) -> None:
        self.url = (url or os.environ.get("GLEITZEIT_SERVER") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("GLEITZEIT_API_KEY")
        self.timeout = timeout
        self._handlers: Dict[str, List[Callable[[Event], Any]]] = {}

    # ----------------------------------------------------------------- HTTP

    def _request(self, method: str, path: str, body: Optional[bytes] = None,
                 content_type: Optional[str] = None, query: Optional[Dict[str, Any]] = None,
                 timeout: Optional[float] = None) -> Any:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        request = urllib.request.Request(url, data=body, method=method)
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        if content_type:
            request.add_header("Content-Type", content_type)
        limit = timeout if timeout is not None else self.timeout
        try:
            with urllib.request.urlopen(request, timeout=limit) as response:
                text = response.read().decode("utf-8")
                return json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            raw = error.read().decode("utf-8", "replace")
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = {"code": "GZ8003", "message": f"HTTP {error.code}: {raw[:200]}"}
            if error.code == 503 and "providers" in parsed:
                return parsed  # an unhealthy health report is still an answer
            raise GleitzeitError.from_body(parsed, error.code) from None
        except (socket.timeout, TimeoutError):
            raise timed_out(url, limit) from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, (socket.timeout, TimeoutError)):
                raise timed_out(url, limit) from None
            raise unreachable(self.url, error.reason) from None
        except (ConnectionError, OSError) as error:
            raise unreachable(self.url, error) from None

    def _get(self, path: str, **query: Any) -> Any:
        return self._request("GET", path, query={k: v for k, v in query.items() if v is not None})

    def _post(self, path: str) -> Any:
        return self._request("POST", path, body=b"")

    # ------------------------------------------------------------ workflows

    def health(self) -> HealthReport:
        return self._get("/api/v1/health")

    def whoami(self) -> WhoAmI:
        return self._get("/api/v1/auth/whoami")

    def submit(self, workflow: WorkflowSource, inputs: Optional[Dict[str, Any]] = None) -> str:
        """Submits YAML/JSON text, a file path, a dict or a :class:`Workflow`;
        returns the workflow id."""
        query = {"input": [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in (inputs or {}).items()]}
        answer = self._request("POST", "/api/v1/workflows", body=_document(workflow).encode("utf-8"),
                               content_type="application/yaml", query=query if query["input"] else None)
        submitted: SubmitResponse = answer
        return submitted["workflow_id"]

    def get(self, workflow_id: str) -> WorkflowView:
        return self._get(f"/api/v1/workflows/{urllib.parse.quote(workflow_id)}")

    def task(self, workflow_id: str, task_id: str) -> Dict[str, Any]:
        return self._get(f"/api/v1/workflows/{urllib.parse.quote(workflow_id)}/tasks/{urllib.parse.quote(task_id)}")

    def list(self, state: Optional[str] = None, limit: int = 20, offset: int = 0) -> List[Dict[str, Any]]:
        page: WorkflowList = self._get("/api/v1/workflows", state=state, limit=limit, offset=offset)
        return page["workflows"]

    def cancel(self, workflow_id: str) -> StateResponse:
        return self._post(f"/api/v1/workflows/{urllib.parse.quote(workflow_id)}/cancel")

    def resume(self, workflow_id: str) -> StateResponse:
        return self._post(f"/api/v1/workflows/{urllib.parse.quote(workflow_id)}/resume")

    def wait(self, workflow_id: str, timeout: Optional[float] = None, raise_on_failure: bool = True) -> Dict[str, Any]:
        """Follows the workflow's events until it finishes; returns its record.
        A failed or cancelled workflow raises :class:`WorkflowFailed`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for event in self.events(workflow_id=workflow_id, after=0, types=TERMINAL, deadline=deadline):
            if event.type in TERMINAL:
                break
        record: WorkflowView = self.get(workflow_id)
        if raise_on_failure and record.get("state") != "completed":
            raise WorkflowFailed(record)
        return record

    def run(self, workflow: WorkflowSource, inputs: Optional[Dict[str, Any]] = None,
            timeout: Optional[float] = None) -> Dict[str, Any]:
        """Submit and wait."""
        return self.wait(self.submit(workflow, inputs), timeout=timeout)

    @staticmethod
    def results(record: WorkflowView) -> Dict[str, Any]:
        """Task id → primary result of a workflow record."""
        return {t["id"]: t.get("result") for t in record.get("tasks", [])}

    def prompt(self, text: str, model: Optional[str] = None, system: Optional[str] = None,
               timeout: Optional[float] = None, **params: Any) -> str:
        """One LLM call (``gleitzeit run --text``); returns the response text."""
        workflow = Workflow("prompt")
        workflow.add_text_task("prompt", text, model=model, system=system, **params)
        record: WorkflowView = self.run(workflow, timeout=timeout)
        return record["tasks"][0]["result"]

    def call_function(self, name: str, timeout: Optional[float] = None, **kwargs: Any) -> Any:
        """One built-in function (``gleitzeit run --function``); returns its result."""
        workflow = Workflow(name)
        workflow.add_python_task(name, function_name=name, kwargs=kwargs)
        record: WorkflowView = self.run(workflow, timeout=timeout)
        return record["tasks"][0]["result"]

    # --------------------------------------------------------------- events

    def events(self, workflow_id: Optional[str] = None, types: Optional[Union[str, List[str], tuple]] = None,
               after: Optional[int] = None, reconnect: bool = True,
               deadline: Optional[float] = None) -> Iterator[Event]:
        """Events over SSE, resumed by id across reconnects (nothing lost or
        repeated). Without ``after`` it starts with the next event."""
        if isinstance(types, str):
            types = [types]
        last = after
        failures = 0
        while True:
            query: Dict[str, Any] = {}
            if workflow_id:
                query["workflow_id"] = workflow_id
            if types:
                query["types"] = ",".join(types)
            if last is not None:
                query["after"] = last
            url = f"{self.url}/api/v1/events?{urllib.parse.urlencode(query)}"
            request = urllib.request.Request(url)
            request.add_header("Accept", "text/event-stream")
            if self.api_key:
                request.add_header("Authorization", f"Bearer {self.api_key}")
            # Longer than the server's 15 s keep-alive: silence means trouble.
            read_timeout = 30.0
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise timed_out(self.url, 0)
                read_timeout = min(read_timeout, left)
            try:
                response = urllib.request.urlopen(request, timeout=read_timeout)
            except urllib.error.HTTPError as error:
                raw = error.read().decode("utf-8", "replace")
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"code": "GZ8003", "message": raw[:200]}
                raise GleitzeitError.from_body(body, error.code) from None
            except (urllib.error.URLError, OSError) as error:
                failures += 1
                if not reconnect or failures > 60:
                    raise unreachable(self.url, error) from None
                time.sleep(0.5)
                continue
            failures = 0
            data: List[str] = []
            try:
                with response:
                    for raw_line in response:
                        line = raw_line.decode("utf-8").rstrip("\r\n")
                        if line.startswith("data:"):
                            data.append(line[5:].lstrip())
                        elif not line and data:
                            event = Event(json.loads("\n".join(data)))
                            data = []
                            last = event.seq
                            yield event
                        if deadline is not None and time.monotonic() > deadline:
                            raise timed_out(self.url, 0)
            except (socket.timeout, TimeoutError, ConnectionError, OSError) as error:
                if deadline is not None and time.monotonic() > deadline:
                    raise timed_out(self.url, 0) from None
                if not reconnect:
                    raise unreachable(self.url, error) from None
            if not reconnect:
                return
            time.sleep(0.3)  # the server went away: reconnect and resume

    def on(self, event_type: str, handler: Optional[Callable[[Event], Any]] = None) -> Any:
        """Registers a handler for an event type (``'*'`` for all); usable as
        a decorator: ``@client.on('task_completed')``."""
        if event_type != "*" and event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}; one of {', '.join(EVENT_TYPES)}")

        def register(function: Callable[[Event], Any]) -> Callable[[Event], Any]:
            self._handlers.setdefault(event_type, []).append(function)
            return function

        return register(handler) if handler is not None else register

    def dispatch(self, event: Event) -> None:
        for handler in self._handlers.get(event.type, []) + self._handlers.get("*", []):
            handler(event)

    def listen(self, workflow_id: Optional[str] = None, after: Optional[int] = None,
               until: Optional[Callable[[Event], bool]] = None, timeout: Optional[float] = None) -> None:
        """Feeds events to the handlers until ``until(event)`` is true (by
        default: the workflow finished, when one is given)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if until is None and workflow_id is not None:
            until = lambda e: e.type in TERMINAL  # noqa: E731
        for event in self.events(workflow_id=workflow_id, after=after, deadline=deadline):
            self.dispatch(event)
            if until is not None and until(event):
                return
