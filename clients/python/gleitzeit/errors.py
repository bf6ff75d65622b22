"""Every failure is a :class:`GleitzeitError` carrying the server's GZ code,
message and hint, so callers can branch on ``error.code``."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .schemas import ErrorBody, ErrorView, TaskView, WorkflowView


class GleitzeitError(Exception):
    """An error with a stable GZ code (``GZ4004``, ``GZ2020``, …)."""

    def __init__(
        self,
        code: str,
        message: str,
        hint: str = "",
        status: Optional[int] = None,
        details: Any = None,
        diagnostics: Optional[List[Dict[str, Any]]] = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.hint = hint
        self.status = status
        self.details = details
        self.diagnostics = diagnostics or []

    @classmethod
    def from_body(cls, body: ErrorBody, status: Optional[int] = None) -> "GleitzeitError":
        return cls(
            code=str(body.get("code", "GZ8003")),
            message=str(body.get("message", "unknown error")),
            hint=str(body.get("hint", "")),
            status=status,
            details=body.get("details"),
            diagnostics=body.get("diagnostics"),
        )

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class WorkflowFailed(GleitzeitError):
    """A workflow ended failed or cancelled; ``workflow`` holds its full record."""

    def __init__(self, workflow: WorkflowView) -> None:
        # The failed task's own error is the precise one (GZ2020 for a
        # Python exception); the workflow's wraps it.
        failed: List[TaskView] = [t for t in workflow.get("tasks", []) if t.get("state") == "failed"]
        error: ErrorView = (failed[0].get("error") if failed else None) or workflow.get("error") or {}
        super().__init__(
            code=str(error.get("code", "GZ2001")),
            message=str(error.get("message", f"workflow {workflow.get('state')}")),
            hint=str(error.get("hint", "")),
            details=error.get("details"),
        )
        self.workflow = workflow
        self.state = workflow.get("state")
        self.task_id = failed[0].get("id") if failed else None


def unreachable(url: str, reason: object) -> GleitzeitError:
    return GleitzeitError(
        "GZ1002",
        f"cannot reach the Gleitzeit server at {url}: {reason}",
        "Start it with `gleitzeit serve`, or check the URL (GLEITZEIT_SERVER).",
    )


def timed_out(url: str, seconds: float) -> GleitzeitError:
    return GleitzeitError(
        "GZ6002",
        f"no answer from {url} within {seconds:g} s",
        "The server may be overloaded; raise the client's timeout or try again.",
    )
