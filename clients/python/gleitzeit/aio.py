"""The asyncio client. Calls run the synchronous client on worker threads, so
the event loop never blocks; events arrive through an asyncio queue.

``GleitzeitCluster`` keeps the earlier Python API's shape (``start``,
``submit_workflow``, ``on``, ``stop``) on top of it."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Union

from .client import EVENT_TYPES, TERMINAL, Client, Event, WorkflowSource
from .errors import GleitzeitError
from .schemas import EventHead

Handler = Callable[[Event], Union[None, Awaitable[None]]]


class AsyncClient:
    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None, timeout: float = 30.0) -> None:
        self.sync = Client(url, api_key, timeout)

    @property
    def url(self) -> str:
        return self.sync.url

    async def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: function(*args, **kwargs))

    async def health(self) -> Dict[str, Any]:
        return await self._call(self.sync.health)

    async def whoami(self) -> Dict[str, Any]:
        return await self._call(self.sync.whoami)

    async def submit(self, workflow: WorkflowSource, inputs: Optional[Dict[str, Any]] = None) -> str:
        return await self._call(self.sync.submit, workflow, inputs)

    async def get(self, workflow_id: str) -> Dict[str, Any]:
        return await self._call(self.sync.get, workflow_id)

    async def list(self, state: Optional[str] = None, limit: int = 20, offset: int = 0) -> List[Dict[str, Any]]:
        return await self._call(self.sync.list, state, limit, offset)

    async def cancel(self, workflow_id: str) -> Dict[str, Any]:
        return await self._call(self.sync.cancel, workflow_id)

    async def resume(self, workflow_id: str) -> Dict[str, Any]:
        return await self._call(self.sync.resume, workflow_id)

    async def wait(self, workflow_id: str, timeout: Optional[float] = None) -> Dict[str, Any]:
        return await self._call(self.sync.wait, workflow_id, timeout)

    async def run(self, workflow: WorkflowSource, inputs: Optional[Dict[str, Any]] = None,
                  timeout: Optional[float] = None) -> Dict[str, Any]:
        return await self._call(self.sync.run, workflow, inputs, timeout)

    async def prompt(self, text: str, model: Optional[str] = None, **params: Any) -> str:
        return await self._call(self.sync.prompt, text, model, **params)

    async def call_function(self, name: str, **kwargs: Any) -> Any:
        return await self._call(self.sync.call_function, name, **kwargs)

    async def events(self, workflow_id: Optional[str] = None, types: Optional[List[str]] = None,
                     after: Optional[int] = None) -> AsyncIterator[Event]:
        """Events as an async iterator (a reader thread feeds a queue)."""
        loop = asyncio.get_running_loop()
        queue: "asyncio.Queue[Any]" = asyncio.Queue(maxsize=10_000)
        stop = threading.Event()

        def read() -> None:
            try:
                for event in self.sync.events(workflow_id=workflow_id, types=types, after=after):
                    if stop.is_set():
                        return
                    asyncio.run_coroutine_threadsafe(queue.put(event), loop).result()
            except GleitzeitError as error:
                asyncio.run_coroutine_threadsafe(queue.put(error), loop)
            except RuntimeError:
                return  # the loop closed under us

        thread = threading.Thread(target=read, name="gleitzeit-events", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, GleitzeitError):
                    raise item
                yield item
        finally:
            stop.set()


class GleitzeitCluster:
    """The earlier Python API: ``await cluster.start()``, ``cluster.on(...)``,
    ``await cluster.submit_workflow(workflow)``, ``await cluster.stop()``.
    Handlers get the event's data as a dict (``event['task_name']``) and may
    be plain functions or coroutines."""

    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None, timeout: float = 30.0) -> None:
        self.client = AsyncClient(url, api_key, timeout)
        self._handlers: Dict[str, List[Handler]] = {}
        self._listener: Optional["asyncio.Task[None]"] = None

    def on(self, event_type: str, handler: Optional[Handler] = None) -> Any:
        if event_type != "*" and event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}; one of {', '.join(EVENT_TYPES)}")

        def register(function: Handler) -> Handler:
            self._handlers.setdefault(event_type, []).append(function)
            return function

        return register(handler) if handler is not None else register

    async def start(self) -> None:
        """Checks the server and starts delivering events (from now on)."""
        await self.client.health()
        await self.client.whoami()
        head: EventHead = await self.client._call(self.client.sync._get, "/api/v1/events/head")
        after = head.get("latest_event_seq", 0)
        self._listener = asyncio.ensure_future(self._listen(after))

    async def _listen(self, after: int) -> None:
        async for event in self.client.events(after=after):
            for handler in self._handlers.get(event.type, []) + self._handlers.get("*", []):
                result = handler(event)
                if inspect.isawaitable(result):
                    await result

    async def submit_workflow(self, workflow: WorkflowSource, inputs: Optional[Dict[str, Any]] = None) -> str:
        return await self.client.submit(workflow, inputs)

    async def wait_for_workflow(self, workflow_id: str, timeout: Optional[float] = None) -> Dict[str, Any]:
        return await self.client.wait(workflow_id, timeout)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except (asyncio.CancelledError, Exception):
                pass
            self._listener = None


__all__ = ["AsyncClient", "GleitzeitCluster", "TERMINAL"]
