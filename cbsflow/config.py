"""Configuration: gin files and bindings, checked before anything runs, and each stage's effective settings.

``parse`` reads gin files, then each ``--bind`` on its own, so an error names the file line or the binding.
``check`` walks everything a stage reaches through gin (its bindings, the components they reference, theirs in
turn, through scopes and macros) and compares each bound value with the parameter's annotation: plain types
(``int``, ``float``, ``str``, ``bool``, tuples, optionals) and component slots (``Instance('monitor')`` takes
``@dirichlet()``, ``Constructor('backbone')`` takes ``@mlp``). ``effective_config`` records the same walk, every
parameter with its bound or default value, which the run directory stores as each artifact's provenance.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import os
import re
import typing
from typing import Any, Iterator

import gin
from gin.config import ConfigurableReference, iterate_references

from cbsflow import registry
from cbsflow.errors import UserError
from cbsflow.registry import Slot

STAGE_MODULE = "stage"


# ----------------------------------------------------------------------------------------------- parsing

@contextlib.contextmanager
def _quiet_gin_search():
    """gin logs an ERROR for every search folder an include is not in; only its final error matters."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def parse(files: list[str], bindings: list[str]) -> None:
    """Parse gin files, then each binding on its own; every gin error becomes one user error naming its source.

    Earlier bindings are cleared first (the registry of components stays), so one process can run many configurations.
    """
    gin.clear_config()
    for f in files:
        if not os.path.isfile(f):
            raise UserError(f"--gin {f}: no such file; gin files live in gin/ (e.g. gin/quickstart.gin)")
        # Includes such as 'gin/base.gin' resolve against every folder above the file, from any working directory.
        folder = os.path.dirname(os.path.abspath(f))
        while folder != os.path.dirname(folder):
            folder = os.path.dirname(folder)
            gin.add_config_file_search_path(folder)
    try:
        with _quiet_gin_search():
            gin.parse_config_files_and_bindings(files, [], finalize_config=False)
    except Exception as err:  # gin raises ValueError, SyntaxError, KeyError, IOError ... for bad files
        raise UserError(explain(err))
    for binding in bindings:
        try:
            gin.parse_config(binding)
        except Exception as err:
            raise UserError(f"--bind {binding!r}: {explain(err, binding)}")
    check_bound_macros(bindings)


_UNKNOWN_REFERENCE = re.compile(r"No configurable matching (?:reference )?'@?([\w./]+?)(?:\(\))?'")
_UNKNOWN_PARAMETER = re.compile(r"Configurable '([\w./]+)' doesn't have a parameter named '(\w+)'")
_LOCATION = re.compile(r'In file "([^"]+)", line (\d+)\s*\n\s*(.+)')


def explain(err: BaseException, binding: str | None = None) -> str:
    """gin's error as one line: where (file:line and the binding), what, and what the valid names are."""
    text = str(err).strip().strip('"')
    first = (text.splitlines() or [type(err).__name__])[0]
    where = ""
    location = _LOCATION.search(text)
    if location:
        where = f"{location.group(1)}:{location.group(2)}: {location.group(3).strip()}: "
        binding = location.group(3).strip()
    if m := _UNKNOWN_REFERENCE.search(first):
        name = m.group(1).split("/")[-1].split(".")[-1]
        if "reference" not in first:  # the left side of a binding
            return where + unknown_selector(name)
        return where + unknown_component(name, _slot_of_binding(binding))
    if m := _UNKNOWN_PARAMETER.search(first):
        return where + unknown_parameter(m.group(1), m.group(2))
    if "Unable to parse" in first or isinstance(err, SyntaxError):
        return where + "cannot parse this; bindings look like name.param = value (e.g. split.solver = @uniform())"
    return where + first


def unknown_component(name: str, slot: Slot | None = None) -> str:
    """'no component named x; did you mean ...?' with the valid names (of the slot's kind when known)."""
    pool = [e.name for e in registry.entries(slot.kind if slot else None)]
    names = [e.name for e in registry.entries()] + list(_stage_names()) + settings_names()
    close = difflib.get_close_matches(name, names, n=3)
    text = f"no component named {name!r}"
    if close:
        text += f"; did you mean {' or '.join(close)}?"
    kind = f"{slot.kind}s" if slot else "components"
    return text + f" ({kind}: {', '.join(pool)}; `tools/run.py --list` shows them all)"


def unknown_selector(name: str) -> str:
    """A binding whose left side names nothing."""
    close = difflib.get_close_matches(name, [e.name for e in registry.entries()] + list(_stage_names())
                                      + settings_names(), n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return (f"nothing is called {name!r}{hint} (a binding sets a parameter of a stage, "
            f"{', '.join(_stage_names())}, of the settings {', '.join(settings_names()) or 'none'}, "
            "or of a component: `tools/run.py --list` shows them)")


def unknown_parameter(selector: str, param: str) -> str:
    name = selector.split("/")[-1].split(".")[-1]
    params = list(parameters(_object_of(name)) or {})
    close = difflib.get_close_matches(param, params, n=2)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"{name} has no parameter {param!r}{hint} (its parameters: {', '.join(params) or 'none'})"


def _stage_names() -> tuple[str, ...]:
    from cbsflow.rundir import STAGE_ORDER

    return STAGE_ORDER


def _object_of(name: str) -> Any:
    """The registered component, stage function or other gin configurable (e.g. the ``training`` settings) called
    ``name`` (None if unknown)."""
    if name in _stage_names():
        from cbsflow import stages

        return getattr(stages, name)
    try:
        return registry.get(name).obj
    except KeyError:
        return _configurable(name)


def settings_names() -> list[str]:
    """Gin configurables of the 'settings' module (e.g. ``training``): bindable, but neither stages nor components."""
    try:
        return sorted(c.name for _, c in gin.config._REGISTRY.items() if c.module == "settings")
    except AttributeError:  # a gin without this (private) registry: --list then shows the components only
        return []


def _configurable(name: str) -> Any:
    """A gin configurable that is neither a stage nor a registered component (None if there is none)."""
    if name in ("macro", "constant"):
        return None
    try:
        return gin.get_configurable(name)
    except ValueError:
        return None


def _slot_of_binding(binding: str | None) -> Slot | None:
    """The slot annotation of the parameter a binding 'name.param = ...' sets, if it has one."""
    if not binding or "=" not in binding:
        return None
    lhs = binding.split("=", 1)[0].strip().split("/")[-1]
    if "." not in lhs:
        return None
    name, param = lhs.rsplit(".", 1)
    hint = hints(_object_of(name.split(".")[-1])).get(param)
    return slot_of(hint)


def check_bound_macros(bindings: list[str]) -> None:
    """A macro set by --bind must be used somewhere (%NAME), or the binding silently does nothing."""
    text = gin.config_str()
    used = set(re.findall(r"%([A-Za-z_]\w*)", text))
    for binding in bindings:
        lhs = binding.split("=", 1)[0].strip()
        if lhs and "." not in lhs and "/" not in lhs and lhs not in used:
            close = difflib.get_close_matches(lhs, sorted(used), n=2)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise UserError(f"--bind {binding!r}: no gin file uses the macro %{lhs}, so it would change nothing; "
                            f"{hint}macros in use: {', '.join(sorted(used)) or 'none'}")


# ----------------------------------------------------------------------------------------------- signatures

def parameters(obj: Any) -> dict[str, inspect.Parameter] | None:
    """Named parameters of a component (its __init__ for classes) or stage, without self and *args/**kwargs."""
    if obj is None:
        return None
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n: p for n, p in sig.parameters.items() if n != "self" and p.kind in kinds}


def hints(obj: Any) -> dict[str, Any]:
    """Resolved type annotations of a component's (or stage's) parameters; {} where they cannot be resolved."""
    if obj is None:
        return {}
    target = obj.__init__ if inspect.isclass(obj) else inspect.unwrap(obj)
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # an annotation naming something not importable: no checks for this component
        return {}


def slot_of(hint: Any) -> Slot | None:
    if typing.get_origin(hint) is typing.Annotated:
        return next((m for m in hint.__metadata__ if isinstance(m, Slot)), None)
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return next((s for s in map(slot_of, typing.get_args(hint)) if s), None)
    return None


# ----------------------------------------------------------------------------------------------- the walk

class Node(typing.NamedTuple):
    """One configurable reached from a stage: its scoped selector, the object, and its bound parameters."""

    selector: str
    obj: Any
    bound: dict[str, Any]


class MissingMacro(typing.NamedTuple):
    """A macro whose value is still %gin.REQUIRED: a setting the user must give."""

    name: str


def _resolve_macros(value: Any, seen: tuple[str, ...] = ()) -> Any:
    """Replace macro references by their values, recursively (in lists, tuples and dicts too)."""
    if isinstance(value, ConfigurableReference):
        if value.configurable.name == "macro":
            name = value.scoped_selector.split("/gin.macro")[0]
            if name in seen:
                raise UserError(f"macro %{name} refers to itself")
            resolved = _resolve_macros(gin.get_bindings(f"{name}/gin.macro", resolve_references=False)["value"],
                                       seen + (name,))
            return MissingMacro(seen[0] if seen else name) if is_required(resolved) else resolved
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve_macros(v, seen) for v in value)
    if isinstance(value, dict):
        return {k: _resolve_macros(v, seen) for k, v in value.items()}
    return value


def is_required(value: Any) -> bool:
    return value is gin.REQUIRED or isinstance(value, MissingMacro) or (
        isinstance(value, ConfigurableReference) and value.scoped_selector.startswith("gin.REQUIRED"))


EXPERT_SCOPE = re.compile(r"expert_\d+")


def expert_scopes() -> list[str]:
    """The per-expert gin scopes some binding names (``expert_1/mlp.width = 32``; cbsflow/budget.py), sorted."""
    found = {part for scope, _ in gin.config._CONFIG for part in scope.split("/") if EXPERT_SCOPE.fullmatch(part)}
    return sorted(found, key=lambda s: int(s.split("_")[1]))


def _kind(name: str) -> str | None:
    try:
        return registry.get(name).kind
    except KeyError:
        return None


def walk(selector: str, scope: tuple[str, ...] = ()) -> Iterator[Node]:
    """Every configurable reachable from ``selector`` (depth first, each scoped selector once)."""
    seen: set[str] = set()

    def visit(name: str, obj: Any, scope: tuple[str, ...]) -> Iterator[Node]:
        key = "/".join(scope + (name,))
        if key in seen:
            return
        seen.add(key)
        with gin.config_scope(list(scope) or None):
            bound = {k: _resolve_macros(v) for k, v in gin.get_bindings(name, resolve_references=False).items()}
        yield Node(key, obj, bound)
        if not scope and _kind(name) == "backbone":  # the experts' networks, also as each expert scope builds them
            for expert in expert_scopes():
                yield from visit(name, obj, (expert,))
        for value in bound.values():
            for ref in iterate_references(value):
                if ref.configurable.name in ("macro", "constant"):
                    continue
                parts = tuple(ref.scoped_selector.split("/"))
                yield from visit(ref.configurable.name, ref.configurable.wrapped, scope + parts[:-1])

    name = selector.split(".")[-1]
    yield from visit(name, _object_of(name), scope)


# ----------------------------------------------------------------------------------------------- checks

def check(stage: str, required: bool = True) -> None:
    """Every binding a stage reaches matches its parameter's annotation; required parameters are bound."""
    for node in walk(f"{STAGE_MODULE}.{stage}"):
        params, types = parameters(node.obj) or {}, hints(node.obj)
        for pname, p in params.items():
            if pname in node.bound:
                check_value(f"{node.selector}.{pname}", node.bound[pname], types.get(pname))
            elif required and p.default is gin.REQUIRED:
                raise UserError(f"{node.selector}.{pname} is required but not bound: add it to the gin file or "
                                f"--bind '{node.selector}.{pname} = ...'{_slot_example(types.get(pname))}")
            if required and isinstance(node.bound.get(pname), MissingMacro):
                macro = node.bound[pname].name
                raise UserError(f"{macro} is required: add --bind \"{macro} = ...\" (it sets {node.selector}.{pname}; "
                                "the header of the gin file says what it is)")


def missing_macros(stages: list[str]) -> dict[str, str]:
    """Macros still %gin.REQUIRED that the given stages read: {macro: the first binding it sets}."""
    missing: dict[str, str] = {}
    for stage in stages:
        for node in walk(f"{STAGE_MODULE}.{stage}"):
            for pname, value in node.bound.items():
                for item in _flatten(value):
                    if isinstance(item, MissingMacro):
                        missing.setdefault(item.name, f"{node.selector}.{pname}")
    return missing


def check_required_macros(stages: list[str], files: list[str]) -> None:
    """One error naming every unset REQUIRED macro (data folders, weights) before anything else is checked."""
    missing = missing_macros(stages)
    if not missing:
        return
    names = ", ".join(missing)
    binds = " ".join(f'--bind "{m} = ..."' for m in missing)
    where = f"the header of {files[-1]}" if files else "the gin file's header"
    raise UserError(f"this configuration needs {names}: "
                    f"add {binds} ({where} says what each is)")


def _flatten(value: Any) -> Iterator[Any]:
    if isinstance(value, MissingMacro):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _flatten(v)
    else:
        yield value


def _slot_example(hint: Any) -> str:
    slot = slot_of(hint)
    names = [e.name for e in registry.entries(slot.kind)] if slot else []
    return f" (a {slot.kind}: {', '.join(names)})" if names else ""


def check_value(where: str, value: Any, hint: Any) -> None:
    """One bound value against its annotation: a one-line user error naming the binding if it does not fit."""
    if hint is None or is_required(value):
        return
    slot = slot_of(hint)
    if slot is not None:
        return _check_slot(where, value, slot, hint)
    if isinstance(value, ConfigurableReference):
        return  # a component where a plain value is annotated: the component decides (e.g. factories)
    if not _fits(value, hint):
        raise UserError(f"{where} = {value!r}: expected {_describe(hint)}, got {_describe_value(value)}"
                        f"{_quote_hint(value, hint)}")


def _check_slot(where: str, value: Any, slot: Slot, hint: Any) -> None:
    if value is None and _optional(hint):
        return
    if slot.form == "list":
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} = {value!r}: expected a list of {slot.kind} components, e.g. [@{_example(slot)}()]")
        for item in value:
            _check_slot(where, item, Slot(slot.kind, "instance"), hint)
        return
    if not isinstance(value, ConfigurableReference):
        raise UserError(f"{where} = {value!r}: expected a {slot.kind} component, e.g. {where} = {_usage(slot)}")
    name = value.configurable.name
    entry = _entry(value)
    if entry is not None and entry.kind != slot.kind:
        raise UserError(f"{where} = {_ref_text(value)}: {name!r} is a {entry.kind}, but this slot takes a {slot.kind} "
                        f"({', '.join(e.name for e in registry.entries(slot.kind))})")
    is_class = inspect.isclass(value.configurable.wrapped)
    if slot.form == "instance" and is_class and not value.evaluate:
        raise UserError(f"{where} = @{value.scoped_selector}: this slot needs an instance; write @{value.scoped_selector}()")
    if slot.form == "instance" and not is_class and value.evaluate:
        raise UserError(f"{where} = @{value.scoped_selector}(): {name} is a function used as it is; "
                        f"write @{value.scoped_selector} (no parentheses)")
    if slot.form == "constructor" and value.evaluate:
        raise UserError(f"{where} = @{value.scoped_selector}(): this slot takes the constructor, which the stage calls "
                        f"for each network; write @{value.scoped_selector} (no parentheses)")


def _entry(ref: ConfigurableReference) -> registry.Entry | None:
    try:
        return registry.get(ref.configurable.name)
    except KeyError:
        return None


def _ref_text(ref: ConfigurableReference) -> str:
    return f"@{ref.scoped_selector}" + ("()" if ref.evaluate else "")


def _example(slot: Slot) -> str:
    names = [e.name for e in registry.entries(slot.kind)]
    return names[0] if names else slot.kind


def _usage(slot: Slot) -> str:
    entries = registry.entries(slot.kind)
    if not entries:
        return f"@my_{slot.kind}()"
    entry = entries[0]
    call = slot.form != "constructor" and inspect.isclass(entry.obj)
    return f"@{entry.name}" + ("()" if call else "")


def _optional(hint: Any) -> bool:
    args = typing.get_args(hint.__origin__ if typing.get_origin(hint) is typing.Annotated else hint)
    return type(None) in args


def _fits(value: Any, hint: Any) -> bool:
    """Whether a gin literal fits an annotation (unknown annotations fit anything)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _fits(value, args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (tuple, list) or origin in (tuple, list, typing.Sequence, __import__("collections.abc").abc.Sequence):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(_fits(v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        return all(_fits(v, inner) for v in value)
    return True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _describe(args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_describe(a) for a in args)
    names = {int: "an integer", float: "a number", str: "a string", bool: "True or False", type(None): "None"}
    if hint in names:
        return names[hint]
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a tuple of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if hint in (tuple, list) or origin in (tuple, list):
        return f"a list of {_describe(args[0])}" if args else "a list"
    return getattr(hint, "__name__", str(hint))


def _describe_value(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float) and value.is_integer():
        return "a float (with a decimal point)"
    return {int: "an integer", float: "a float", str: "a string", list: "a list", tuple: "a tuple"}.get(
        type(value), type(value).__name__)


def _quote_hint(value: Any, hint: Any) -> str:
    if isinstance(value, str):
        try:
            literal = float(value)
        except ValueError:
            return ""
        shown = int(literal) if literal.is_integer() and _fits(1, hint) else literal
        if _fits(shown, hint):
            return f" (write {shown} without quotes)"
    if isinstance(value, float) and value.is_integer() and _fits(int(value), hint):
        return f" (write {int(value)})"
    return ""


# ----------------------------------------------------------------------------------------------- effective config

def render(value: Any) -> Any:
    """A JSON-able form of a (macro-resolved) gin value: references as '@scope/name()' strings."""
    if isinstance(value, ConfigurableReference):
        return _ref_text(value)
    if isinstance(value, MissingMacro):
        return f"%{value.name} (required, unset)"
    if isinstance(value, (list, tuple)):
        return [render(v) for v in value]
    if isinstance(value, dict):
        return {str(k): render(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


class StageConfig(dict):
    """A stage's effective configuration; ``defaults`` names the entries that are parameters' defaults (unbound)."""

    defaults: frozenset = frozenset()


def effective_config(stage: str, exclude: tuple[str, ...] = ()) -> StageConfig:
    """Every parameter of every configurable a stage reaches, bound or default: {'aux/mlp.width': 128, ...}.

    ``exclude`` names parameters that do not affect the result (e.g. logging intervals), left out wherever they are.
    """
    config, defaults = StageConfig(), set()
    for node in walk(f"{STAGE_MODULE}.{stage}"):
        for pname, p in (parameters(node.obj) or {}).items():
            if pname in exclude:
                continue
            if pname in node.bound:
                config[f"{node.selector}.{pname}"] = render(node.bound[pname])
            elif p.default is not inspect.Parameter.empty and p.default is not gin.REQUIRED:
                config[f"{node.selector}.{pname}"] = render(p.default)
                defaults.add(f"{node.selector}.{pname}")
    config.defaults = frozenset(defaults)
    return config


def describe_component(name: str) -> str:
    """`--list NAME`: a component's (or stage's) kind, docstring and parameters with their defaults and types."""
    if name in _stage_names():
        obj, kind = _object_of(name), "pipeline stage"
    elif _configurable(name) is not None and name not in [e.name for e in registry.entries()]:
        obj, kind = _configurable(name), "settings"
    else:
        try:
            entry = registry.get(name)
        except KeyError:
            raise UserError(f"--list {name}: {unknown_component(name)}")
        obj, kind, name = entry.obj, entry.kind, entry.name
    doc = inspect.getdoc(obj) or ""
    lines = [f"{name} ({kind}): {doc.splitlines()[0] if doc else ''}"]
    lines += ["  " + line for line in doc.splitlines()[1:] if line.strip()]
    types = hints(obj)
    params = parameters(obj) or {}
    lines.append("parameters:" if params else "parameters: none")
    for pname, p in params.items():
        if p.default is inspect.Parameter.empty:
            default = "(given by the stage)"
        elif p.default is gin.REQUIRED:
            default = "(required)"
        else:
            default = f"= {p.default!r}"
        hint = types.get(pname)
        kind_text = (f"a {slot_of(hint).kind}" if slot_of(hint) else _describe(hint)) if hint is not None else ""
        lines.append(f"  {name}.{pname} {default}" + (f"   [{kind_text}]" if kind_text else ""))
    return "\n".join(lines)
