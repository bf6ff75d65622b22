#!/usr/bin/env python3
"""A custom Gleitzeit provider in Python: JSON-RPC 2.0 over stdio, one
request per line in, one response per line out."""

import json
import sys


def add(params):
    return params["a"] + params["b"]


def stats(params):
    numbers = params["numbers"]
    return {"count": len(numbers), "sum": sum(numbers), "mean": sum(numbers) / len(numbers)}


def divide(params):
    if params["b"] == 0:
        raise ZeroDivisionError("division by zero")
    return params["a"] / params["b"]


METHODS = {"add": add, "stats": stats, "divide": divide}

for line in sys.stdin:
    if not line.strip():
        continue
    request = json.loads(line)
    answer = {"jsonrpc": "2.0", "id": request.get("id")}
    method = METHODS.get(request.get("method"))
    if method is None:
        answer["error"] = {"code": -32601, "message": f"no method {request.get('method')}"}
    else:
        try:
            answer["result"] = method(request.get("params") or {})
        except Exception as error:  # reported to the task, not fatal here
            answer["error"] = {"code": -32000, "message": f"{type(error).__name__}: {error}"}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
