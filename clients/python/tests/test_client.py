"""The Python client against the real server."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conftest import EXAMPLES, Server, free_port
from gleitzeit import AsyncClient, Client, GleitzeitCluster, GleitzeitError, Workflow, WorkflowFailed


def client(server: Server) -> Client:
    return Client(server.url, api_key=server.admin_key, timeout=10)  # type: ignore[attr-defined]


def test_run_yaml_text_file_and_builder(server: Server) -> None:
    c = client(server)
    by_file = c.run(str(EXAMPLES / "quickstart.yaml"), timeout=60)
    assert by_file["state"] == "completed"
    assert Client.results(by_file)["fib"] == [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]

    text = "name: t\ntasks:\n  - id: a\n    method: python/execute\n    parameters: {code: 'result = 6 * 7'}\n"
    assert Client.results(c.run(text, timeout=60)) == {"a": 42}

    # Seed 000's "Data Processing Pipeline", built in Python.
    workflow = Workflow("Data Processing Pipeline")
    workflow.add_python_task("Generate Dataset", function_name="fibonacci", kwargs={"n": 10})
    workflow.add_python_task(
        "Analyze Numbers",
        function_name="analyze_numbers",
        kwargs={"numbers": "{{Generate Dataset.result}}"},
        dependencies=["Generate Dataset"],
    )
    record = c.run(workflow, timeout=60)
    analysis = record["tasks"][1]["result"]
    assert analysis["count"] == 10 and analysis["sum"] == 88

    assert c.call_function("fibonacci", n=5) == [0, 1, 1, 2, 3]
    listed = c.list(limit=10)
    assert len(listed) == 4
    assert c.get(record["workflow_id"][:10])["workflow_id"] == record["workflow_id"]


def test_inputs_override(server: Server) -> None:
    text = "name: t\ninputs: {n: 1}\ntasks:\n  - id: a\n    method: python/execute\n    parameters: {code: 'result = inputs[\"n\"] * 2'}\n"
    record = client(server).run(text, inputs={"n": 21}, timeout=60)
    assert record["tasks"][0]["result"] == 42


def test_a_failing_workflow_raises_with_code_message_and_hint(server: Server) -> None:
    text = "name: bad\ntasks:\n  - id: boom\n    method: python/execute\n    parameters: {code: 'raise ValueError(\"nope\")'}\n"
    with pytest.raises(WorkflowFailed) as caught:
        client(server).run(text, timeout=60)
    error = caught.value
    assert error.code == "GZ2020"
    assert "nope" in error.message
    assert error.hint
    assert error.state == "failed"


def test_invalid_yaml_is_a_gz3_error_with_diagnostics(server: Server) -> None:
    with pytest.raises(GleitzeitError) as caught:
        client(server).submit("name: x\ntasks:\n  - id: a\n    method: python/execute\n    parameterz: {}\n")
    assert caught.value.code == "GZ3002"
    assert caught.value.status == 422
    assert caught.value.diagnostics[0]["line"] == 5


def test_auth_failures(server: Server) -> None:
    with pytest.raises(GleitzeitError) as missing:
        Client(server.url, api_key="", timeout=5).list()
    assert (missing.value.code, missing.value.status) == ("GZ4001", 401)
    with pytest.raises(GleitzeitError) as wrong:
        Client(server.url, api_key="gzt_" + "A" * 46, timeout=5).list()
    assert (wrong.value.code, wrong.value.status) == ("GZ4004", 401)
    # A USER cannot manage keys.
    assert server.cli("auth", "users", "create", "bob", "--role", "USER").returncode == 0
    made = server.cli("--json", "auth", "keys", "create", "--user", "bob")
    import json

    bob = Client(server.url, api_key=json.loads(made.stdout)["key"], timeout=5)
    assert bob.whoami()["role"] == "USER"
    with pytest.raises(GleitzeitError) as denied:
        bob._get("/api/v1/auth/keys")
    assert (denied.value.code, denied.value.status) == ("GZ4003", 403)


def test_unreachable_server_fails_fast_with_gz1002() -> None:
    started = time.monotonic()
    with pytest.raises(GleitzeitError) as caught:
        Client(f"http://127.0.0.1:{free_port()}", timeout=3).health()
    assert caught.value.code == "GZ1002"
    assert time.monotonic() - started < 10


def test_event_handlers_by_the_seeds_names(server: Server) -> None:
    async def main() -> None:
        cluster = GleitzeitCluster(server.url, api_key=server.admin_key)  # type: ignore[attr-defined]
        await cluster.start()
        done = asyncio.Event()
        completed = []
        progress = []

        @cluster.on("task_completed")
        async def on_task(event):  # type: ignore[no-untyped-def]
            completed.append((event["task_name"], event["result"]))

        cluster.on("workflow_progress", lambda e: progress.append((e["completed_tasks"], e["total_tasks"])))

        results = {}

        async def on_done(event):  # type: ignore[no-untyped-def]
            results.update(event["task_results"])
            done.set()

        cluster.on("workflow_completed", on_done)
        workflow_id = await cluster.submit_workflow(EXAMPLES / "quickstart.yaml")
        await asyncio.wait_for(done.wait(), timeout=60)
        await cluster.stop()
        assert workflow_id.startswith("wf_")
        assert ("fib", [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]) in completed
        assert progress[-1] == (4, 4)
        assert results["fib"] == [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]

    asyncio.run(main())


def test_async_client_runs_and_streams(server: Server) -> None:
    async def main() -> None:
        c = AsyncClient(server.url, api_key=server.admin_key)  # type: ignore[attr-defined]
        record = await c.run(EXAMPLES / "quickstart.yaml", timeout=60)
        kinds = []
        async for event in c.events(workflow_id=record["workflow_id"], after=0):
            kinds.append(event.type)
            if event.type == "workflow_completed":
                break
        assert kinds[0] == "workflow_started" and kinds.count("task_completed") == 4

    asyncio.run(main())


def test_event_stream_survives_a_server_restart(server: Server) -> None:
    c = client(server)
    seen = []
    failure = []

    def follow() -> None:
        try:
            for event in c.events(after=0):
                seen.append(event)
                if sum(1 for e in seen if e.type == "workflow_completed") == 2:
                    return
        except Exception as error:  # pragma: no cover - reported below
            failure.append(error)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    c.run(str(EXAMPLES / "quickstart.yaml"), timeout=60)
    deadline = time.monotonic() + 30
    while not any(e.type == "workflow_completed" for e in seen):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # The server goes away and comes back on the same port and store.
    server.kill()
    server.start()
    c.run(str(EXAMPLES / "quickstart.yaml"), timeout=60)
    reader.join(timeout=60)
    assert not failure, failure
    seqs = [e.seq for e in seen]
    assert seqs == sorted(set(seqs)), "events lost order or repeated across the reconnect"
    assert [e.type for e in seen].count("workflow_started") == 2


def test_cancel(server: Server) -> None:
    c = client(server)
    workflow_id = c.submit("name: slow\ntasks:\n  - id: s\n    method: python/execute\n    parameters: {code: 'import time; time.sleep(30)'}\n")
    time.sleep(0.5)
    answer = c.cancel(workflow_id)
    assert answer["state"] == "cancelled"
    with pytest.raises(WorkflowFailed) as caught:
        c.wait(workflow_id, timeout=30)
    assert caught.value.state == "cancelled"


@pytest.mark.skipif(not __import__("os").environ.get("GLEITZEIT_TEST_LLAMA_URL"), reason="needs the llama.cpp test server")
def test_a_single_prompt_against_the_real_model(server: Server) -> None:
    answer = client(server).prompt("Say hello.", model="llama3", timeout=120)
    assert isinstance(answer, str) and answer.strip()
