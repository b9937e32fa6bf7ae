"""A DAG drawn left to right in layers (Sugiyama's first steps): each job one layer right of its
furthest dependency, the jobs of a layer ordered by the mean position of their dependencies (one
sweep cuts most crossings), edges as curves, the critical path marked. Pure: the page renders it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 180, 40, 60, 14, 10
MAX_DRAWN = 400  # a bigger DAG is listed, not drawn: a drawing of thousands of boxes helps nobody


@dataclass(frozen=True)
class Box:
    id: str
    name: str
    status: str
    x: int
    y: int
    critical: bool


@dataclass(frozen=True)
class Edge:
    path: str  # SVG path data
    critical: bool


@dataclass
class Drawing:
    width: int = 0
    height: int = 0
    boxes: list[Box] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


def layers(nodes: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each job's layer: 0 without dependencies in the graph, else one past its deepest one.
    `nodes` come in topological order (the API's)."""
    out: dict[str, int] = {}
    for n in nodes:
        deps = [out[d] for d in n.get("dependencies", []) if d in out]
        out[n["id"]] = 1 + max(deps) if deps else 0
    return out


def draw(nodes: Sequence[Mapping[str, Any]]) -> Drawing:
    if not nodes or len(nodes) > MAX_DRAWN:
        return Drawing()
    layer = layers(nodes)
    columns: dict[int, list[Mapping[str, Any]]] = {}
    for n in nodes:
        columns.setdefault(layer[n["id"]], []).append(n)
    row: dict[str, float] = {}
    for col in sorted(columns):
        def barycenter(n: Mapping[str, Any]) -> float:
            deps = [row[d] for d in n.get("dependencies", []) if d in row]
            return sum(deps) / len(deps) if deps else float(len(row))
        for i, n in enumerate(sorted(columns[col], key=barycenter)):
            row[n["id"]] = i
    place = {n["id"]: (PAD + layer[n["id"]] * (BOX_W + GAP_X), PAD + int(row[n["id"]]) * (BOX_H + GAP_Y))
             for n in nodes}
    crit = {n["id"] for n in nodes if n.get("critical")}
    d = Drawing(width=PAD * 2 + (max(layer.values()) + 1) * (BOX_W + GAP_X) - GAP_X,
                height=PAD * 2 + max(len(c) for c in columns.values()) * (BOX_H + GAP_Y) - GAP_Y)
    for n in nodes:
        x, y = place[n["id"]]
        name = str(n.get("name") or n["id"])
        d.boxes.append(Box(n["id"], name if len(name) <= 22 else name[:21] + "…", str(n["status"]).lower(), x, y,
                           n["id"] in crit))
        for dep in n.get("dependencies", []):
            if dep not in place:
                continue
            x0, y0 = place[dep][0] + BOX_W, place[dep][1] + BOX_H // 2
            x1, y1 = x, y + BOX_H // 2
            mid = (x0 + x1) // 2
            d.edges.append(Edge(f"M{x0},{y0} C{mid},{y0} {mid},{y1} {x1},{y1}", dep in crit and n["id"] in crit))
    return d
