"""Keys reach their target in the order they were typed, even in a burst (a paste, a fast typist,
keys buffered while the app was busy).

Textual hands a key to the focused widget's queue and resolves a screen's or the app's binding
only once the key has bubbled back up through the widget's parents; by then the keys typed after
it have already gone to the widget that had the focus. So `s` followed at once by `python x.py`
opened the submit form but the text went to the jobs table (whose keys filter, cancel, reprioritize).
Here a key's bindings are resolved when the app reads it, unless a text field has the focus (it
takes its own keys first); a binding that opens a screen is waited for until that screen is mounted
(and has set its focus), so the next key goes to the new screen."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from textual import events
from textual.widget import AwaitMount
from textual.widgets import Input, TextArea

MOUNT_WAIT = 2.0  # seconds a key waits for the screen the key before it opened


async def resolve_first(app: Any, event: events.Event) -> bool:
    """True when `event` was a key handled here by a binding (the app must not route it again)."""
    if not isinstance(event, events.Key) or event.is_forwarded or not app.screen_stack \
            or isinstance(app.focused, (Input, TextArea)):
        return False
    if app.screen.maximized is not None and event.key == "escape":
        return False  # Textual's own: escape leaves a maximized widget
    screen = app.screen
    handled: bool = await app._check_bindings(event.key, priority=True) or await app._check_bindings(event.key)
    if handled and app.screen is not screen and not app.screen.is_mounted:
        # bounded: a screen whose mount waits on the app itself must not hang it (it then gets the
        # keys as it would have without this)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.ensure_future(AwaitMount(app.screen, [app.screen])), MOUNT_WAIT)
    return handled
