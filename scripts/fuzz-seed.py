#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ from every example workflow and the YAML used in
tests: whole workflows for `workflow` and `api_body`, every `${...}` template
for `references`, every `when:` condition for `when_expr`. Idempotent: files
are named by the hash of their content."""
import glob, hashlib, os, re, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
os.chdir(root)
workflows = []
for path in sorted(glob.glob("examples/**/*.yaml", recursive=True)):
    workflows.append(open(path, encoding="utf-8").read())
raw = re.compile(r'r#+"(.*?)"#+', re.S)
plain = re.compile(r'"((?:[^"\\]|\\.)*tasks:(?:[^"\\]|\\.)*)"', re.S)
for path in sorted(glob.glob("crates/**/*.rs", recursive=True) + glob.glob("clients/**/*.py", recursive=True)):
    text = open(path, encoding="utf-8").read()
    for m in raw.finditer(text):
        if "tasks:" in m.group(1):
            workflows.append(m.group(1))
    for m in plain.finditer(text):
        body = m.group(1)
        if "\n" in body or "\\n" in body:
            try:
                workflows.append(bytes(body, "utf-8").decode("unicode_escape"))
            except Exception:
                pass

templates, conditions = set(), set()
for w in workflows:
    for m in re.finditer(r"\$\{[^}\n]{0,200}\}", w):
        templates.add(m.group(0))
    for m in re.finditer(r"when:\s*(.+)", w):
        conditions.add(m.group(1).strip().strip("\"'"))

def write(target, items):
    d = os.path.join("fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    for item in items:
        data = item.encode("utf-8")
        name = hashlib.sha1(data).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)

write("workflow", workflows)
write("api_body", ["\n" + w for w in workflows] + ["input=word=hello&input=n=3\n" + w for w in workflows[:20]])
write("references", sorted(templates) + [w for w in workflows if "${" in w][:30])
write("when_expr", sorted(conditions))
print(f"{len(workflows)} workflows, {len(templates)} templates, {len(conditions)} conditions", file=sys.stderr)
