"""Python client for the Gleitzeit server (``gleitzeit serve``).

>>> from gleitzeit import Client
>>> client = Client("http://127.0.0.1:8765", api_key="gzt_…")
>>> record = client.run("examples/quickstart.yaml")
"""

from .aio import AsyncClient, GleitzeitCluster
from .client import Client, Event
from .errors import GleitzeitError, WorkflowFailed
from .workflow import Workflow

__all__ = ["AsyncClient", "Client", "Event", "GleitzeitCluster", "GleitzeitError", "Workflow", "WorkflowFailed"]
__version__ = "0.1.0"
