#!/usr/bin/env python3
"""Fail when the library's source files call each other in a cycle.

Reads the symbol tables of the library's object files (nm), draws an edge
A -> B when A.o uses a symbol that B.o defines, and reports every strongly
connected component of more than one file. Layers may only call down; a
cycle means some file calls back up into one that calls it.

    scripts/check-layers.py OBJ...          exit 1 on a cycle
    scripts/check-layers.py --graph OBJ...  also print the edges

An argument ending in .a stands for every object file of that archive (the
meson test `check-layers`, suite `layers`, passes the static library).
"""
import os
import subprocess
import sys
import tempfile


def symbols(obj):
    out = subprocess.run(["nm", "--defined-only", "-g", obj], check=True,
                         capture_output=True, text=True).stdout
    defined = {l.split()[-1] for l in out.splitlines() if l.strip()}
    out = subprocess.run(["nm", "-u", obj], check=True,
                         capture_output=True, text=True).stdout
    used = {l.split()[-1] for l in out.splitlines() if l.strip()}
    return defined, used


def name(obj):
    base = os.path.basename(obj)
    for pre in ("src_",):
        if base.startswith(pre):
            base = base[len(pre):]
    return base.replace(".c.o", ".c").replace(".o", ".c")


def sccs(nodes, edges):
    """Tarjan's algorithm; returns the components with more than one node
    (or a node with an edge to itself)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main(argv):
    graph = False
    if argv and argv[0] == "--graph":
        graph, argv = True, argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="check-layers-") as tmp:
        return check(graph, expand(argv, tmp))


def expand(argv, tmp):
    """The object files named, with each archive replaced by its members
    (extracted into tmp)."""
    objs = []
    for n, arg in enumerate(argv):
        if not arg.endswith(".a"):
            objs.append(arg)
            continue
        into = os.path.join(tmp, str(n))
        os.mkdir(into)
        members = subprocess.run(["ar", "t", os.path.abspath(arg)], check=True,
                                 capture_output=True, text=True).stdout.split()
        subprocess.run(["ar", "x", os.path.abspath(arg)], check=True, cwd=into)
        objs += [os.path.join(into, m) for m in members]
    return objs


def check(graph, argv):
    owner, uses = {}, {}
    for obj in argv:
        d, u = symbols(obj)
        n = name(obj)
        uses[n] = u
        for s in d:
            owner[s] = n
    edges = {}
    for n, u in uses.items():
        for s in u:
            o = owner.get(s)
            if o and o != n:
                edges.setdefault(n, {}).setdefault(o, set()).add(s)
    if graph:
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f"{a} -> {b}: {', '.join(sorted(edges[a][b]))}")
    cycles = sccs(uses.keys(), edges)
    for comp in cycles:
        print("layer cycle among: " + " ".join(comp), file=sys.stderr)
        members = set(comp)
        for a in comp:
            for b in sorted(edges.get(a, {})):
                if b in members:
                    syms = sorted(edges[a][b])
                    more = f" (+{len(syms) - 4})" if len(syms) > 4 else ""
                    print(f"  {a} -> {b}: {', '.join(syms[:4])}{more}",
                          file=sys.stderr)
    if not cycles:
        print(f"layers: {len(uses)} files, no call cycle")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
