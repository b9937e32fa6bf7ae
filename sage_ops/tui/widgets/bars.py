"""A usage bar, "used/total" with a filled gauge coloured by how full it is: the nodes screen draws
one per resource of each node, so the numbers and the thresholds live in one place."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

# (fraction at or above which, style): full is red, busy is yellow, else green (as a traffic light)
THRESHOLDS: tuple[tuple[float, str], ...] = ((0.9, "bold red"), (0.7, "yellow"), (0.0, "green"))
FILLED, EMPTY = "█", "░"  # the gauge still reads without colour (NO_COLOR)
GIB = 2**30


def level_style(fraction: float) -> str:
    """The style of a bar that is `fraction` full."""
    return next(style for limit, style in THRESHOLDS if fraction >= limit)


def amount(value: float, gib: bool = False) -> str:
    """A compact amount: CPUs as 2 or 1.5, bytes as GiB with one decimal."""
    if gib:
        return f"{value / GIB:.0f}" if value >= 10 * GIB else f"{value / GIB:.1f}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def usage_text(used: float, total: float, width: int = 10, gib: bool = False, label: str = "") -> Text:
    """`label ███░░░ used/total` as rich Text; a resource the node lacks (total 0) shows as "-"."""
    out = Text(f"{label} " if label else "", no_wrap=True, overflow="ellipsis")
    if total <= 0:
        return out.append("-", style="dim")
    fraction = max(0.0, min(1.0, used / total))
    cells = round(fraction * width)
    if used > 0 and cells == 0:
        cells = 1  # anything in use shows, however little
    out.append(FILLED * cells, style=level_style(fraction))
    out.append(EMPTY * (width - cells), style="dim")
    out.append(f" {amount(used, gib)}/{amount(total, gib)}{'GiB' if gib else ''}")
    return out


class UsageBar(Widget):
    """One resource's usage as a bar that fills the widget's width (set `used`/`total` to update)."""

    DEFAULT_CSS = """
    UsageBar { height: 1; width: 1fr; }
    """

    used: reactive[float] = reactive(0.0)
    total: reactive[float] = reactive(0.0)

    def __init__(self, label: str = "", used: float = 0.0, total: float = 0.0, gib: bool = False,
                 *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.label = label
        self.gib = gib
        self.set_reactive(UsageBar.used, used)
        self.set_reactive(UsageBar.total, total)

    def set_usage(self, used: float, total: float) -> None:
        self.used, self.total = used, total

    def render(self) -> Text:
        numbers = len(f" {amount(self.used, self.gib)}/{amount(self.total, self.gib)}GiB")
        width = max(3, self.size.width - numbers - len(self.label) - 1)
        return usage_text(self.used, self.total, width, self.gib, self.label)
