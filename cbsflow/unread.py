"""Bindings that nothing reads: a `--bind` (or a binding in a gin file named with --gin) of a component that none
of the chosen stages builds or calls changes nothing, silently. `unread_bindings` finds them before anything runs,
by walking what each chosen stage reaches (the same walk that makes a stage's configuration digest); the command
line prints one warning line for each, naming what reads that parameter instead where something does (e.g.
`warm_split.monitor` for `profile.monitor` when the warm split measures its own profile), or stops under --strict.

The gin files' own bindings are checked, not those of the files they include (gin/base.gin binds every stage's
defaults on purpose); macros (`N_SEGMENTS = 4`) are not bindings of a component and are left out.
"""

from __future__ import annotations

import re

BINDING = re.compile(r"^\s*([A-Za-z_][\w./]*)\.([A-Za-z_]\w*)\s*=")


def bindings_of(text: str) -> list[str]:
    """'scope/name.param' of each binding in gin text (one binding per line; includes, macros and comments skipped)."""
    out = []
    for line in text.splitlines():
        m = BINDING.match(line.split("#", 1)[0])
        if m and not line.lstrip().startswith(("include", "import")):
            out.append(f"{m.group(1)}.{m.group(2)}")
    return out


def _split(selector: str) -> tuple[tuple[str, ...], str]:
    """('expert',), 'training' for 'expert/training' (a module prefix such as 'settings.training' dropped)."""
    *scope, name = selector.split("/")
    return tuple(scope), name.split(".")[-1]


def reached(stages: list[str]) -> dict[tuple[tuple[str, ...], str], set[str]]:
    """(scope, name) -> the parameters a chosen stage's walk passes through (every configurable it builds)."""
    from cbsflow import config

    out: dict = {}
    for stage in stages:
        for node in config.walk(f"{config.STAGE_MODULE}.{stage}"):
            out.setdefault(_split(node.selector), set()).update((config.parameters(node.obj) or {}).keys())
    return out


def _reads(binding: str, nodes: dict) -> bool:
    selector, param = binding.rsplit(".", 1)
    scope, name = _split(selector)
    # An unscoped binding reaches every scope of its configurable; a scoped one, the nodes under that scope.
    return any(n == name and param in params and all(s in node_scope for s in scope)
               for (node_scope, n), params in nodes.items())


def unread_bindings(bindings: list[str], stages: list[str]) -> list[str]:
    """One line per binding no chosen stage reads: what it is, and what reads that parameter instead, if anything."""
    nodes, lines = reached(stages), []
    for binding in dict.fromkeys(bindings):
        if "." not in binding or _reads(binding, nodes):
            continue
        param = binding.rsplit(".", 1)[1]
        instead = sorted({"/".join(s + (n,)) + f".{param}" for (s, n), params in nodes.items() if param in params})
        lines.append(f"{binding} is bound but nothing in the chosen stages ({', '.join(stages)}) reads it"
                     + (f"; read instead: {', '.join(instead[:3])}" if instead else ""))
    return lines
