"""The footer of the main screens: Textual's Footer, made again only when the keys it shows change.

Textual's Footer recomposes (a new widget per key, each styled anew) whenever the screen's
bindings may have changed, which includes every time its screen comes back to the top: about
a third of a screen switch's work, for the same keys as before."""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widgets import Footer


class KeysFooter(Footer):
    """A Footer that skips recomposing when the shown keys are those it already shows."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._shown: tuple[tuple[str, str, bool], ...] | None = None

    def bindings_changed(self, screen: Screen[Any]) -> None:
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            shown = tuple((b.key, b.description, enabled)
                          for _, b, enabled, _ in screen.active_bindings.values() if b.show)
            if shown == self._shown:
                return
            self._shown = shown
        super().bindings_changed(screen)
