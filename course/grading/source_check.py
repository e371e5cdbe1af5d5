"""Is the learner's function their own? Read its source, not its behaviour.

A one-line wrapper around the course's reference (or around the library the check compares
with) gives right answers, so the answers cannot tell. The source can. This module parses every
code cell of a notebook, follows what each name is bound to (imports, aliases, assignments,
attribute chains), and lists the references that an exercise function reaches: in its own
body, or in any function of the notebook that it calls. Dynamic look-ups that hide a name
(``__import__``, ``importlib.import_module``, ``getattr`` with a computed name, ``exec``,
``eval``) are reported too, since the grader cannot follow them.

It judges only what is written in the notebook; it runs nothing.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

#: The course's own implementations: off limits in every exercise.
COURSE_IMPLEMENTATIONS = ("course.diffusion", "course.nets", "course.sampling", "course.models",
                          "course.train", "course.tinysd", "course.lora")
_DYNAMIC = {"__import__", "exec", "eval", "compile", "importlib.import_module",
            "importlib.__import__", "builtins.__import__", "builtins.exec", "builtins.eval"}


@dataclass(frozen=True)
class Finding:
    function: str  # the notebook function where it was seen
    cell: int  # code cell number, from 1
    line: int  # line in that cell
    what: str  # the dotted name reached, or the dynamic construct

    def __str__(self) -> str:
        return f"{self.what} (in {self.function}, code cell {self.cell}, line {self.line})"


def python_source(cell_source: str) -> str:
    """A cell's text as plain Python: IPython magics and shell lines become calls."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(cell_source)
    except Exception:  # noqa: BLE001 - without IPython, drop the magic lines
        return "\n".join(line for line in cell_source.splitlines()
                         if not line.lstrip().startswith(("%", "!")))


class _Names:
    """What each top-level name of the notebook stands for, as a dotted path."""

    def __init__(self):
        self.bound: dict[str, str] = {}

    def resolve(self, node: ast.AST) -> str | None:
        """The dotted path an expression refers to, if it is built from known names."""
        if isinstance(node, ast.Name):
            return self.bound.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id == "getattr" and len(node.args) >= 2:
            base = self.resolve(node.args[0])
            name = node.args[1]
            if base and isinstance(name, ast.Constant) and isinstance(name.value, str):
                return f"{base}.{name.value}"
        if isinstance(node, ast.Call):  # `Scheduler(...)` stands for an instance of it
            path = self.resolve(node.func)
            return f"{path}()" if path else None
        return None

    def learn(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.bound[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".")[0]
                        self.bound[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    self.bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                value = node.value
                path = self.resolve(value) if value is not None else None
                for target in targets:
                    if isinstance(target, ast.Name) and path:
                        self.bound[target.id] = path


def _functions(trees: list[tuple[int, ast.AST]]) -> dict[str, tuple[int, ast.AST]]:
    """Every function and class (and lambda bound to a name) defined in the notebook, with its
    cell number; a later definition replaces an earlier one, as it does when the cells run. A
    class stands for its bases and all its methods: an exercise may be a class (lesson 07)."""
    found = {}
    for cell, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found[node.name] = (cell, node)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        found[target.id] = (cell, node.value)
    return found


def _is_forbidden(path: str, forbidden: tuple[str, ...]) -> bool:
    """Whether ``path`` is forbidden code: a name, or a method of an instance of a forbidden
    class. What a forbidden *function* returned (``make_beta_schedule(...)``) is only data."""
    if "()" in path:
        called, _, _ = path.partition("()")
        if not called.rsplit(".", 1)[-1][:1].isupper():
            return False
        path = called + path.partition("()")[2]
    return any(path == f or path.startswith(f + ".") for f in forbidden)


def _shadowed(function: ast.AST) -> set[str]:
    """Names a function binds itself (parameters, assignments, loop targets): inside it they
    no longer mean what the notebook's cells bound them to."""
    names: set[str] = set()
    arguments = getattr(function, "args", None)  # a class has none
    if arguments is not None:
        names = {a.arg for a in arguments.args + arguments.posonlyargs + arguments.kwonlyargs}
        names |= {a.arg for a in (arguments.vararg, arguments.kwarg) if a is not None}
    body = function.body if isinstance(function.body, list) else [function.body]
    for statement in body:
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return names


def find_borrowed(cells: list[str], function: str, oracles: tuple[str, ...] = ()) -> list[Finding]:
    """References to the course or to ``oracles`` that ``function`` reaches, in source order.

    ``cells`` are the notebook's code cells; ``oracles`` dotted names of what the exercise is
    checked against (e.g. ``"diffusers.DDPMScheduler"``). Empty when the function is its own
    work, or when it is not defined (then there is nothing to judge).
    """
    trees = []
    for cell, source in enumerate(cells, start=1):
        try:
            trees.append((cell, ast.parse(python_source(source))))
        except SyntaxError:
            continue
    names = _Names()
    for _ in range(3):  # aliases of aliases settle in a few passes
        for _cell, tree in trees:
            names.learn(tree)
    functions = _functions(trees)
    forbidden = COURSE_IMPLEMENTATIONS + tuple(oracles)
    findings: list[Finding] = []
    seen: set[str] = set()
    todo = [function]
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        cell, body = functions[name]
        local = _Names()
        hidden = _shadowed(body)
        local.bound = {k: v for k, v in names.bound.items() if k not in hidden}
        local.learn(body)  # imports and aliases inside the function count too
        for node in ast.walk(body):
            if isinstance(node, ast.Name) and node.id in functions and node.id != name:
                todo.append(node.id)
            if isinstance(node, (ast.Name, ast.Attribute, ast.Call)):
                path = local.resolve(node)
                if path and _is_forbidden(path, forbidden):
                    findings.append(Finding(name, cell, getattr(node, "lineno", 0), path))
                elif path in _DYNAMIC or (isinstance(node, ast.Name) and node.id in _DYNAMIC):
                    findings.append(Finding(name, cell, getattr(node, "lineno", 0),
                                            f"dynamic code ({path or node.id})"))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id == "getattr" and len(node.args) >= 2 and \
                    not isinstance(node.args[1], ast.Constant):
                findings.append(Finding(name, cell, node.lineno, "getattr with a computed name"))
    longest: dict[tuple[str, int], Finding] = {}  # `a.b.c` also resolves as `a.b` and `a`
    for finding in findings:
        key = (finding.function, finding.line)
        if key not in longest or len(finding.what) > len(longest[key].what):
            longest[key] = finding
    return sorted(longest.values(), key=lambda f: (f.function != function, f.line))
