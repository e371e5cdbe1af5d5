"""Is the learner's function their own? Read its source, not its behaviour.

A one-line wrapper around the course's reference (or around the library the check compares
with) gives right answers, so the answers cannot tell. The source can. This module parses every
code cell of a notebook, follows what each name is bound to (imports, aliases, assignments,
attribute chains), and flags for review (:func:`review`):

- **what the exercise reaches**: the course's implementations, ``course.checks``, or the
  library the exercise is checked against (a whole family where one class would do as well:
  every diffusers scheduler for a sampler step), in the function's body, its default
  arguments, any function of the notebook it calls, or a notebook variable it uses;
- **how the exercise is bound**: anything but a plain ``def`` (a ``class`` where the exercise
  is a class) with no decorator: not an assignment, a ``functools.partial``, a callable object;
- **the whole notebook**: dynamic code (``exec``, ``eval``, ``compile``, ``__import__``,
  ``importlib``, ``globals()``, ``sys.modules[...]``, ``getattr``/``setattr`` with a computed
  name on a module or class), assignment to an attribute of an imported module or class
  (monkeypatching), and the private helpers of ``course.checks``.

Python cannot be proven honest from its text: this is a deterrent, and a flagged exercise goes
to an instructor (``--allow-flagged``). It judges only what is written; it runs nothing.
"""

from __future__ import annotations

import ast
import fnmatch
from dataclasses import dataclass

#: The course's own implementations: off limits in every exercise.
COURSE_IMPLEMENTATIONS = ("course.diffusion", "course.nets", "course.sampling", "course.models",
                          "course.training", "course.tinysd", "course.lora", "course.flows")
#: The lessons' checks: a lesson calls them at top level, an exercise never may.
CHECKS = "course.checks"
_DYNAMIC = {"__import__", "exec", "eval", "compile", "globals", "importlib",
            "builtins.__import__", "builtins.exec", "builtins.eval", "builtins.compile",
            "builtins.globals"}
#: Decorators that leave an exercise its own code (the lessons sample under ``no_grad``).
SAFE_DECORATORS = {"torch.no_grad()", "torch.inference_mode()", "torch.enable_grad()"}
#: Where the notebook level binds the name ``get_ipython``: its ``run_cell`` runs any text.
_NOTEBOOK = "(notebook)"


@dataclass(frozen=True)
class Finding:
    function: str  # the notebook function where it was seen, or "(notebook)"
    cell: int  # code cell number, from 1
    line: int  # line in that cell
    what: str  # the dotted name reached, or the dynamic construct

    def __str__(self) -> str:
        where = "" if self.function == _NOTEBOOK else f"in {self.function}, "
        return f"{self.what} ({where}code cell {self.cell}, line {self.line})"


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
    class. What a forbidden *function* returned (``make_beta_schedule(...)``) is only data.
    An entry with ``*`` is a pattern (``diffusers.*Scheduler*``: every scheduler)."""
    if "()" in path:
        called, _, _ = path.partition("()")
        if not called.rsplit(".", 1)[-1][:1].isupper():
            return False
        path = called + path.partition("()")[2]
    return any(fnmatch.fnmatchcase(path, f) if "*" in f else
               (path == f or path.startswith(f + ".")) for f in forbidden)


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


def _parse(cells: list[str]) -> list[tuple[int, ast.AST]]:
    trees = []
    for cell, source in enumerate(cells, start=1):
        try:
            trees.append((cell, ast.parse(python_source(source))))
        except SyntaxError:
            continue
    return trees


def _notebook_names(trees) -> _Names:
    names = _Names()
    for _ in range(3):  # aliases of aliases settle in a few passes
        for _cell, tree in trees:
            names.learn(tree)
    return names


def _is_dynamic(path: str | None) -> bool:
    return bool(path) and any(path == d or path.startswith(d + ".") for d in _DYNAMIC)


def _is_code_path(path: str | None) -> bool:
    """A module, a function or a class (not an instance: no call in the path)."""
    return bool(path) and "()" not in path


def _top_level_values(trees) -> dict[str, list[tuple[int, ast.AST]]]:
    """For each name a top-level statement assigns, the expressions assigned to it."""
    values: dict[str, list[tuple[int, ast.AST]]] = {}
    for cell, tree in trees:
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            values.setdefault(name.id, []).append((cell, node.value))
    return values


def find_borrowed(cells: list[str], function: str, oracles: tuple[str, ...] = ()) -> list[Finding]:
    """References to the course, its checks or ``oracles`` that ``function`` reaches, in source
    order: in its body and default arguments, in the notebook's functions it calls, and in the
    values of the notebook variables it uses.

    ``cells`` are the notebook's code cells; ``oracles`` dotted names (or ``*`` patterns) of
    what the exercise is checked against (e.g. ``"diffusers.DDPMScheduler"``). Empty when the
    function is its own work, or when it is not defined (then there is nothing to judge).
    """
    trees = _parse(cells)
    names = _notebook_names(trees)
    functions = _functions(trees)
    values = _top_level_values(trees)
    forbidden = COURSE_IMPLEMENTATIONS + (CHECKS,) + tuple(oracles)
    findings: list[Finding] = []

    def scan(owner: str, cell: int, node: ast.AST, bound: _Names, hidden: set[str],
             data: bool = False) -> list[str]:
        """Findings in ``node``; the notebook names it uses (functions and variables).
        ``data``: ``node`` is a variable's value, where calling the course (``betas =
        make_beta_schedule(...)``) only makes data, but naming its code (``f = reference``,
        ``partial(reference)``) hands that code on."""
        used = []
        called = {id(sub.func) for sub in ast.walk(node) if isinstance(sub, ast.Call)}
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and sub.id not in hidden and (
                    sub.id in functions or sub.id in values):
                used.append(sub.id)
            if data and id(sub) in called:
                continue
            if isinstance(sub, (ast.Name, ast.Attribute, ast.Call)):
                path = bound.resolve(sub)
                if data and path and "()" in path:
                    continue
                if path and _is_forbidden(path, forbidden):
                    findings.append(Finding(owner, cell, getattr(sub, "lineno", 0), path))
                elif _is_dynamic(path) or (isinstance(sub, ast.Name) and _is_dynamic(sub.id)):
                    findings.append(Finding(owner, cell, getattr(sub, "lineno", 0),
                                            f"dynamic code ({path or sub.id})"))
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and \
                    sub.func.id in ("getattr", "setattr") and len(sub.args) >= 2 and \
                    not isinstance(sub.args[1], ast.Constant):
                findings.append(Finding(owner, cell, sub.lineno,
                                        f"{sub.func.id} with a computed name"))
        return used

    seen: set[str] = set()
    todo = [function]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in functions:
            cell, body = functions[name]
            local = _Names()
            hidden = _shadowed(body)
            local.bound = {k: v for k, v in names.bound.items() if k not in hidden}
            local.learn(body)  # imports and aliases inside the function count too
            todo += [u for u in scan(name, cell, body, local, hidden) if u != name]
        elif name != function:  # a notebook variable the exercise uses: what was put in it
            for cell, value in values.get(name, []):
                todo += scan(name, cell, value, names, set(), data=True)
    longest: dict[tuple[str, int], Finding] = {}  # `a.b.c` also resolves as `a.b` and `a`
    for finding in findings:
        key = (finding.function, finding.line)
        if key not in longest or len(finding.what) > len(longest[key].what):
            longest[key] = finding
    return sorted(longest.values(), key=lambda f: (f.function != function, f.line))


def binding_findings(cells: list[str], function: str, may_be_class: bool = False
                     ) -> list[Finding]:
    """How the notebook binds the exercise's name, when it is not a plain ``def`` (or
    ``class``): an assignment, an import, a loop or ``with`` target, a decorator."""
    findings = []
    allowed = (ast.FunctionDef, ast.ClassDef) if may_be_class else (ast.FunctionDef,)
    trees = _parse(cells)
    names = _notebook_names(trees)
    for cell, tree in trees:
        for node in ast.walk(tree):
            line = getattr(node, "lineno", 0)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                    node.name == function:
                if not isinstance(node, allowed):
                    findings.append(Finding(_NOTEBOOK, cell, line,
                                            f"{function} is not a plain def"))
                else:
                    for decorator in node.decorator_list:
                        if names.resolve(decorator) not in SAFE_DECORATORS:
                            findings.append(Finding(_NOTEBOOK, cell, decorator.lineno,
                                                    f"{function} has a decorator "
                                                    f"({ast.unparse(decorator)[:60]})"))
            elif isinstance(node, ast.Name) and node.id == function and \
                    isinstance(node.ctx, (ast.Store, ast.Del)):
                findings.append(Finding(_NOTEBOOK, cell, line,
                                        f"{function} is bound by an assignment, not a def"))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if (alias.asname or alias.name.split(".")[0]) == function:
                        findings.append(Finding(_NOTEBOOK, cell, line,
                                                f"{function} is bound by an import"))
    return findings


def notebook_findings(cells: list[str]) -> list[Finding]:
    """What in the whole notebook could change any exercise's answer behind its source:
    dynamic code, monkeypatching of modules and classes, the checks' private helpers."""
    trees = _parse(cells)
    names = _notebook_names(trees)
    findings = []
    for cell, tree in trees:
        membership = set()  # `"x" in sys.modules` only reads: the lessons' Colab cell does
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and all(isinstance(o, (ast.In, ast.NotIn))
                                                     for o in node.ops):
                membership.update(id(c) for c in node.comparators)
        for node in ast.walk(tree):
            line = getattr(node, "lineno", 0)
            path = names.resolve(node) if isinstance(node, (ast.Name, ast.Attribute)) else None
            if path and _is_dynamic(path) and not isinstance(node.ctx if hasattr(
                    node, "ctx") else None, ast.Store):
                findings.append(Finding(_NOTEBOOK, cell, line, f"dynamic code ({path})"))
            elif isinstance(node, ast.Name) and _is_dynamic(node.id) and node.id not in \
                    names.bound:
                findings.append(Finding(_NOTEBOOK, cell, line, f"dynamic code ({node.id})"))
            if path == "sys.modules" and id(node) not in membership:
                findings.append(Finding(_NOTEBOOK, cell, line, "sys.modules"))
            if path and path.startswith(CHECKS + ".") and any(
                    part.startswith("_") for part in path[len(CHECKS) + 1:].split(".")):
                findings.append(Finding(_NOTEBOOK, cell, line,
                                        f"a private helper of the checks ({path})"))
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
                targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) \
                    else [node.target]
                for target in targets:
                    if isinstance(target, ast.Attribute):
                        base = names.resolve(target.value)
                        if _is_code_path(base):
                            findings.append(Finding(_NOTEBOOK, cell, line,
                                                    f"monkeypatching ({base}.{target.attr})"))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in ("getattr", "setattr", "delattr") and node.args and \
                    node.func.id not in names.bound:
                base = names.resolve(node.args[0])
                computed = len(node.args) < 2 or not isinstance(node.args[1], ast.Constant)
                if node.func.id != "getattr" and _is_code_path(base):
                    findings.append(Finding(_NOTEBOOK, cell, line,
                                            f"monkeypatching ({node.func.id} on {base})"))
                elif computed and _is_code_path(base):
                    findings.append(Finding(_NOTEBOOK, cell, line,
                                            f"getattr with a computed name on {base}"))
    unique = {(f.cell, f.line, f.what): f for f in findings}
    return sorted(unique.values(), key=lambda f: (f.cell, f.line))


def review(cells: list[str], function: str, oracles: tuple[str, ...] = (),
           may_be_class: bool = False) -> list[Finding]:
    """Everything that flags this exercise for review: what it reaches, how it is bound, and
    what the notebook does anywhere (see the module's docstring). Empty: nothing to review."""
    return (find_borrowed(cells, function, oracles)
            + binding_findings(cells, function, may_be_class) + notebook_findings(cells))
