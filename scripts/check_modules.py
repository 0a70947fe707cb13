#!/usr/bin/env python3
"""The crate's module graph follows the stage order and has no cycles (run by scripts/check-repo).

Each top-level module of src/ (a file `src/x.rs` with its folder `src/x/`) is a node; a use of
`crate::y` outside comments and test code in any of its files is an edge x -> y. The data path
reads left to right, source -> router -> batch -> upload -> offsets/commit (docs/architecture.md),
and every module has a layer in LAYERS below. A module may import modules of its own layer or of
a lower one, never of a higher one: the first stage does not depend on a later one, and the
vocabulary they share (`model`) depends on none of them. Observability (`metrics`) is called by
every stage, so it sits just above the vocabulary and imports nothing else; the driver
(`pipeline`) and the tools (app, verify, demo, ...) sit above every stage. Within a layer, a
cycle means two modules each need the other: the shared type belongs in the lower one.

Prints every violation (an import into a higher layer, a cycle, a module with no layer) and
exits 1 if there is one.
"""
import collections
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"

# Layer of every top-level module, lowest first.
LAYERS: list[tuple[str, set[str]]] = [
    ("vocabulary and configuration", {"model", "config", "interpolate", "redact", "budget",
                                      "template", "lograte", "health", "malloc"}),
    ("observability", {"metrics"}),
    ("source", {"source"}),
    ("router", {"router", "scan", "envelope", "decode"}),
    ("batch", {"batch"}),
    ("upload", {"upload", "sink"}),
    # `destination` holds the seam (the DestinationKind trait) and the object kind; another kind
    # (`table`) implements the trait in a module of its own, which `pipeline` chooses.
    ("destination kind, offsets and commit", {"destination", "table", "offsets"}),
    ("driver", {"pipeline"}),
    ("tools", {"app", "catalogue", "cli", "connect", "ddl", "demo", "eventgen", "http",
               "preflight", "progress", "s3server", "schema_server", "verify"}),
]
RANK = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}


def edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for path in SRC.rglob("*.rs"):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "bin" or str(rel) in ("main.rs", "lib.rs") or path.name.endswith("tests.rs"):
            continue
        top = rel.parts[0].removesuffix(".rs")
        text = path.read_text()
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text, maxsplit=1)[0]
        code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
        for m in re.finditer(r"crate::([a-z_][a-z0-9_]*)", code):
            if m.group(1) != top:
                graph[top].add(m.group(1))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def modules() -> set[str]:
    found = set()
    for path in SRC.iterdir():
        name = path.name.removesuffix(".rs")
        if name not in ("bin", "main", "lib"):
            found.add(name)
    return found


def order(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a module into a module of a higher layer, and every module without one."""
    found = []
    for m in sorted(modules()):
        if m not in RANK:
            found.append(f"module `{m}` has no layer: add it to LAYERS in scripts/check_modules.py "
                         "(and to docs/architecture.md)")
    for a in sorted(graph):
        for b in sorted(graph[a]):
            if a in RANK and b in RANK and RANK[b] > RANK[a]:
                found.append(f"`{a}` ({LAYERS[RANK[a]][0]}) imports `{b}` ({LAYERS[RANK[b]][0]}), "
                             "a later layer; move the shared type down (e.g. to `model`)")
    return found


def main() -> int:
    graph = edges()
    bad = cycles(graph)
    for comp in bad:
        detail = "; ".join(f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in comp)
        print(f"check-repo: module cycle between {', '.join(comp)} ({detail}); move the shared "
              "type to the lower module")
    wrong = order(graph)
    for w in wrong:
        print(f"check-repo: stage order: {w}")
    return 1 if bad or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
