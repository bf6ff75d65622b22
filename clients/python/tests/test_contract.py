"""The client's side of the API contract: ``gleitzeit/schemas.py`` names,
after the server's OpenAPI schemas, every field the client reads. These
tests fail when

- a TypedDict names a schema ``docs/openapi.json`` lacks, a field the schema
  lacks, or a field whose type or nullability differs;
- the client reads a key (``x["key"]``, ``x.get("key")``) of a value annotated
  with one of those types that the type does not declare.

So a field renamed in the server's types (and ``docs/openapi.json``
refreshed) or in the client alone fails here. No server is needed."""

from __future__ import annotations

import ast
import json
import pathlib
import typing

import pytest

from gleitzeit import schemas

PACKAGE = pathlib.Path(schemas.__file__).parent
DOCUMENT = PACKAGE.parent.parent.parent / "docs" / "openapi.json"


def typed_dicts(module):
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, dict) and hasattr(value, "__annotations__")
        and value.__module__ == module.__name__
    }


def document():
    return json.loads(DOCUMENT.read_text(encoding="utf-8"))


def ref_name(schema):
    return schema.get("$ref", "").rsplit("/", 1)[-1] or None


def properties(doc, schema, into):
    """A schema's properties through $ref and allOf/oneOf/anyOf: name -> (schema, required)."""
    name = ref_name(schema)
    if name:
        properties(doc, doc["components"]["schemas"][name], into)
        return into
    for key in ("allOf", "oneOf", "anyOf"):
        for part in schema.get(key, []):
            properties(doc, part, into)
    required = set(schema.get("required", []))
    for field, value in schema.get("properties", {}).items():
        into[field] = (value, field in required)
    return into


def kinds(doc, schema):
    """What a schema may be ({'string', 'ref:Name', 'any', …}) and whether it may be null."""
    found, nullable = set(), False
    name = ref_name(schema)
    if name:
        target = doc["components"]["schemas"][name]
        if target.get("type") == "object" or "properties" in target or "allOf" in target:
            found.add(f"ref:{name}")
        else:
            inner, null = kinds(doc, target)
            found |= inner
            nullable |= null
    types = schema.get("type")
    for t in [types] if isinstance(types, str) else types or []:
        if t == "null":
            nullable = True
        else:
            found.add(t)
    for key in ("allOf", "oneOf", "anyOf"):
        for part in schema.get(key, []):
            if part.get("type") == "null":
                nullable = True
                continue
            inner, null = kinds(doc, part)
            found |= inner - {"any"}
            nullable |= null
    if schema.get("nullable"):
        nullable = True
    return (found or {"any"}), nullable


def compatible(hint, found, dicts):
    """Whether a (non-None) Python type hint fits a schema's kinds."""
    if hint is typing.Any or "any" in found:
        return True
    origin = typing.get_origin(hint) or hint
    if isinstance(hint, type) and hint.__name__ in dicts and dicts[hint.__name__] is hint:
        return f"ref:{hint.__name__}" in found
    return {
        str: "string" in found,
        int: "integer" in found,
        float: bool(found & {"number", "integer"}),
        bool: "boolean" in found,
        list: "array" in found,
        dict: "object" in found or any(k.startswith("ref:") for k in found),
    }.get(origin, False)


def alternatives(hint):
    """A hint's alternatives without None, and whether None is one."""
    if typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        return [a for a in args if a is not type(None)], type(None) in args
    return [hint], False


def schema_problems(doc, dicts):
    problems = []
    for name, cls in dicts.items():
        schema = doc["components"]["schemas"].get(name)
        if schema is None:
            problems.append(f"{name} names no schema of docs/openapi.json")
            continue
        fields = properties(doc, schema, {})
        for field, hint in typing.get_type_hints(cls).items():
            if field not in fields:
                problems.append(f"{name}.{field} is read, but schema {name} has no field `{field}` "
                                f"(it has: {', '.join(fields)})")
                continue
            prop, required = fields[field]
            found, nullable = kinds(doc, prop)
            present, optional = alternatives(hint)
            for alternative in present:
                if not compatible(alternative, found, dicts):
                    problems.append(f"{name}.{field} is read as {alternative}, but the schema says {sorted(found)}")
            if (nullable or not required) and not optional and hint is not typing.Any:
                problems.append(f"{name}.{field} may be {'null' if nullable else 'absent'} in the schema; "
                                f"declare it Optional")
    return problems


class Reads(ast.NodeVisitor):
    """Key reads of values annotated with a schema type, per function."""

    def __init__(self, dicts, source_name):
        self.dicts = dicts
        self.source_name = source_name
        self.scopes = [{}]
        self.problems = []

    def annotation_type(self, node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node = ast.parse(node.value, mode="eval").body
        if isinstance(node, ast.Name) and node.id in self.dicts:
            return self.dicts[node.id]
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in ("List", "list"):
            inner = self.annotation_type(node.slice)
            return typing.List[inner] if inner is not None else None
        return None

    def lookup(self, name):
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def field(self, owner, key, node):
        hints = typing.get_type_hints(owner)
        if key not in hints:
            self.problems.append(f"{self.source_name}:{node.lineno}: reads `{key}` of {owner.__name__}, "
                                 f"which schemas.{owner.__name__} does not declare")
            return None
        present, _ = alternatives(hints[key])
        return present[0] if len(present) == 1 else None

    def type_of(self, node):
        if isinstance(node, ast.Name):
            return self.lookup(node.id)
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                found = self.type_of(value)
                if found is not None:
                    return found
            return None
        if isinstance(node, ast.IfExp):
            return self.type_of(node.body) or self.type_of(node.orelse)
        if isinstance(node, ast.Subscript):
            owner = self.type_of(node.value)
            key = node.slice
            if owner is None or not isinstance(key, ast.Constant):
                return None
            if isinstance(key.value, str) and isinstance(owner, type) and owner in self.dicts.values():
                return self.field(owner, key.value, node)
            if isinstance(key.value, int) and typing.get_origin(owner) is list:
                return typing.get_args(owner)[0]
            return None
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            owner = self.type_of(node.func.value)
            if isinstance(owner, type) and owner in self.dicts.values():
                return self.field(owner, node.args[0].value, node)
        return None

    def visit_FunctionDef(self, node):
        scope = {}
        for arg in node.args.args + node.args.kwonlyargs:
            if arg.annotation is not None:
                found = self.annotation_type(arg.annotation)
                if found is not None:
                    scope[arg.arg] = found
        self.scopes.append(scope)
        self.generic_visit(node)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node):
        if isinstance(node.target, ast.Name):
            found = self.annotation_type(node.annotation)
            if found is not None:
                self.scopes[-1][node.target.id] = found
        self.generic_visit(node)

    def visit_comprehension_targets(self, generators):
        for generator in generators:
            iterated = self.type_of(generator.iter)
            if typing.get_origin(iterated) is list and isinstance(generator.target, ast.Name):
                self.scopes[-1][generator.target.id] = typing.get_args(iterated)[0]

    def visit_ListComp(self, node):
        self.scopes.append({})
        self.visit_comprehension_targets(node.generators)
        self.generic_visit(node)
        self.scopes.pop()

    visit_DictComp = visit_ListComp
    visit_SetComp = visit_ListComp
    visit_GeneratorExp = visit_ListComp

    def visit_Subscript(self, node):
        self.type_of(node)
        self.generic_visit(node)

    def visit_Call(self, node):
        if isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            self.type_of(node)
        self.generic_visit(node)


def read_problems(dicts, sources):
    problems = []
    for name, text in sources:
        reads = Reads(dicts, name)
        reads.visit(ast.parse(text))
        # A read is reported once even when nested visits reach it twice.
        problems.extend(dict.fromkeys(reads.problems))
    return problems


def client_sources():
    return [(p.name, p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.glob("*.py"))]


def test_every_field_the_client_reads_is_in_the_api_document():
    dicts = typed_dicts(schemas)
    assert len(dicts) >= 8, sorted(dicts)
    problems = schema_problems(document(), dicts) + read_problems(dicts, client_sources())
    assert not problems, "\n" + "\n".join(problems)


def test_the_client_reads_fields_through_its_schema_types():
    # The check covers the client's reads only if the client uses the types.
    sources = dict(client_sources())
    for used in ("WorkflowView", "SubmitResponse", "ErrorBody", "EventHead"):
        assert any(f": {used}" in text or f"-> {used}" in text for text in sources.values()), used


@pytest.mark.parametrize("case", ["unknown_read", "renamed_field", "never_null", "wrong_type"])
def test_the_checker_finds_each_kind_of_mismatch(case):
    doc = {"components": {"schemas": {"Thing": {"type": "object", "required": ["id"], "properties": {
        "id": {"type": "string"}, "done_ms": {"type": ["integer", "null"]}}}}}}
    namespace = {}
    declared = {
        "unknown_read": "id: str\n    done_ms: Optional[int]",
        "renamed_field": "ident: str",
        "never_null": "done_ms: int",
        "wrong_type": "id: int",
    }[case]
    source = f"from typing import Optional, TypedDict\nclass Thing(TypedDict):\n    {declared}\n"
    # Not inheriting this file's postponed annotations: the hints are evaluated at once.
    exec(compile(source, "<case>", "exec", dont_inherit=True), namespace)
    dicts = {"Thing": namespace["Thing"]}
    if case == "unknown_read":
        assert not schema_problems(doc, dicts)
        problems = read_problems(dicts, [("t.py", "def f(t: Thing):\n    return t['name']\n")])
        assert "reads `name`" in problems[0]
        assert not read_problems(dicts, [("t.py", "def f(t: Thing):\n    return t.get('done_ms')\n")])
    else:
        problems = schema_problems(doc, dicts)
        expected = {"renamed_field": "no field `ident`", "never_null": "may be null",
                    "wrong_type": "read as"}[case]
        assert problems and expected in problems[0], problems
