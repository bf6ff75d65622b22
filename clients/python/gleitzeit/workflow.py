"""Building workflows in Python, in the shape the earlier Python API used
(``add_python_task``, ``add_text_task``, …). A workflow becomes the same
document a YAML file describes."""

from __future__ import annotations

import base64
import pathlib
from typing import Any, Dict, List, Optional, Union


class Workflow:
    def __init__(self, name: str, inputs: Optional[Dict[str, Any]] = None) -> None:
        self.name = name
        self.inputs: Dict[str, Any] = dict(inputs or {})
        self.tasks: List[Dict[str, Any]] = []

    def add_task(
        self,
        name: str,
        method: str,
        parameters: Optional[Dict[str, Any]] = None,
        dependencies: Optional[List[str]] = None,
        **options: Any,
    ) -> str:
        """Adds any task (``retry``, ``timeout``, ``on_error`` … as options);
        returns its name, for ``dependencies`` and ``{{NAME.result}}``."""
        task: Dict[str, Any] = {"name": name, "method": method, "parameters": dict(parameters or {})}
        if dependencies:
            task["dependencies"] = list(dependencies)
        task.update(options)
        self.tasks.append(task)
        return name

    def add_python_task(
        self,
        name: str,
        function_name: Optional[str] = None,
        kwargs: Optional[Dict[str, Any]] = None,
        code: Optional[str] = None,
        dependencies: Optional[List[str]] = None,
        **options: Any,
    ) -> str:
        """A built-in function by name (``function_name="fibonacci"``), or
        Python ``code`` that sets ``result``."""
        if (function_name is None) == (code is None):
            raise ValueError("give exactly one of function_name or code")
        if function_name is not None:
            return self.add_task(name, function_name, {"kwargs": dict(kwargs or {})}, dependencies, **options)
        return self.add_task(name, "python/execute", {"code": code}, dependencies, **options)

    def add_function_task(
        self,
        name: str,
        function: str,
        args: Optional[Dict[str, Any]] = None,
        dependencies: Optional[List[str]] = None,
        **options: Any,
    ) -> str:
        return self.add_task(name, "function/call", {"name": function, "args": dict(args or {})}, dependencies, **options)

    def add_text_task(
        self,
        name: str,
        prompt: str,
        model: Optional[str] = None,
        dependencies: Optional[List[str]] = None,
        system: Optional[str] = None,
        **params: Any,
    ) -> str:
        parameters: Dict[str, Any] = {"prompt": prompt, **params}
        if model:
            parameters["model"] = model
        if system:
            parameters["system"] = system
        return self.add_task(name, "llm/chat", parameters, dependencies)

    def add_vision_task(
        self,
        name: str,
        prompt: str,
        image_path: Union[str, pathlib.Path],
        model: Optional[str] = None,
        dependencies: Optional[List[str]] = None,
        **params: Any,
    ) -> str:
        """The image is read here and sent inline (the server reads no
        client paths)."""
        data = base64.b64encode(pathlib.Path(image_path).read_bytes()).decode("ascii")
        parameters: Dict[str, Any] = {"prompt": prompt, "images": [data], **params}
        if model:
            parameters["model"] = model
        return self.add_task(name, "llm/vision", parameters, dependencies)

    def to_dict(self) -> Dict[str, Any]:
        document: Dict[str, Any] = {"name": self.name, "tasks": self.tasks}
        if self.inputs:
            document["inputs"] = self.inputs
        return document
