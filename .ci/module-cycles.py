#!/usr/bin/env python3
"""Fails when the crate's top-level modules (src/<name>.rs, src/<name>/) import each other in a
circle: prints each strongly connected component of the `crate::<top>` references and exits 1.

References are `crate::a::...` paths, also inside groups (`use crate::{a, b::c}`), outside `//`
comments; files named tests.rs and files under tests/ directories are not read (tests may
reach across layers). `--layers` prints the modules bottom-up with what each imports.
Run from the repository root."""
import os
import re
import sys

ROOT = "src"


def tops():
    names = set()
    for n in os.listdir(ROOT):
        if n.endswith(".rs") and n not in ("lib.rs", "main.rs"):
            names.add(n[:-3])
        elif os.path.isdir(os.path.join(ROOT, n)):
            names.add(n)
    return names


def files_of(top):
    out = []
    if os.path.isfile(os.path.join(ROOT, top + ".rs")):
        out.append(os.path.join(ROOT, top + ".rs"))
    d = os.path.join(ROOT, top)
    if os.path.isdir(d):
        for dirpath, _, fs in os.walk(d):
            out += [os.path.join(dirpath, f) for f in fs if f.endswith(".rs")]
    return [f for f in sorted(out) if not f.endswith("tests.rs") and "/tests/" not in f]


def strip_comments(text):
    return "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))


def group_items(text, start):
    """The first path segment of each item of the `{...}` group opening at `start`."""
    depth, i, item_start, items = 0, start, start + 1, []
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                items.append(text[item_start:i])
                break
        elif c == "," and depth == 1:
            items.append(text[item_start:i])
            item_start = i + 1
        i += 1
    return [m.group(1) for it in items if (m := re.match(r"\s*([a-z_][a-z0-9_]*)", it))]


def references(text):
    for m in re.finditer(r"\bcrate\s*::\s*(\{|[a-z_][a-z0-9_]*)", text):
        if m.group(1) == "{":
            yield from group_items(text, m.start(1))
        else:
            yield m.group(1)


def graph():
    names = tops()
    edges = {t: {} for t in names}
    for t in names:
        for f in files_of(t):
            with open(f, encoding="utf-8") as fh:
                text = strip_comments(fh.read())
            for m in references(text):
                if m in names and m != t:
                    edges[t].setdefault(m, set()).add(f)
    return edges


def sccs(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out  # reverse topological order: a component comes after those it imports


def main():
    edges = graph()
    comps = sccs(edges)
    cycles = [c for c in comps if len(c) > 1]
    for c in cycles:
        print("SCC:", c)
        for a in c:
            for b in c:
                if b in edges[a]:
                    print(f"  {a} -> {b}: {sorted(edges[a][b])[:3]}")
    if "--layers" in sys.argv[1:]:
        for c in comps:
            for v in c:
                print(f"{v}: {' '.join(sorted(edges[v])) or '-'}")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
