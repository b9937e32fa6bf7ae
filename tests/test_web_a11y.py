"""The dashboard's colours are readable: every text colour of the stylesheet against its
background, light and dark, meets WCAG AA (4.5:1) — what a contrast checker would say, read from
app.css itself so a change of palette is checked too."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest

CSS = (files("sage_ops.web") / "static" / "app.css").read_text()
TEXT = ("--fg", "--muted", "--accent", "--ok", "--bad", "--run", "--wait")


def palette(block: str) -> dict[str, str]:
    return dict(re.findall(r"(--[a-z]+):\s*(#[0-9a-f]{6})", block))


LIGHT = palette(CSS.split("@media (prefers-color-scheme: dark)")[0])
DARK = {**LIGHT, **palette(CSS.split("@media (prefers-color-scheme: dark)")[1].split("}")[0])}


def luminance(hex_colour: str) -> float:
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("colour", TEXT)
def test_text_colours_meet_wcag_aa_on_the_background(scheme: str, colour: str) -> None:
    p = LIGHT if scheme == "light" else DARK
    assert contrast(p[colour], p["--bg"]) >= 4.5, (scheme, colour, round(contrast(p[colour], p["--bg"]), 2))


def test_both_palettes_were_read() -> None:
    assert (set(TEXT) <= set(LIGHT), set(TEXT) <= set(DARK), LIGHT["--bg"] != DARK["--bg"]) == (True, True, True)
