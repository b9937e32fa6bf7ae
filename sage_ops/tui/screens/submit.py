"""Submit a job from a form: a command (split like a shell would) or a script file, its resources,
dependencies, retries and priority, and what it brings along (a shipped working directory, pip
requirements, a venv of the node, a container image). The spec is checked on the way (by the schema, then by the
daemon); any refusal shows as one line in the form so the user fixes a field and submits again."""

from __future__ import annotations

import asyncio
import shlex
from typing import Any

from pydantic import ValidationError
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from ...client import script_spec
from ...errors import SageOpsError
from ...lifecycle import JobStatus
from ..messages import Failed

# (input id, label, placeholder)
FIELDS = (("command", "command", "python train.py --epochs 3  (or a script below)"),
          ("script", "script", "path of a script to ship with the job"), ("name", "name", "optional"),
          ("cpu", "cpu", "1"), ("gpu", "gpu", "0"), ("memory", "memory", "e.g. 512MiB, 8GB"),
          ("custom", "custom", "K=V,... custom resources"),
          ("dependencies", "after", "A, notok:B, any:C  (job ids; ok unless said)"),
          ("array", "array", "0-99%5: one job of many tasks, {index} in its command"),
          ("retries", "retries", "0"), ("priority", "priority", "0 (higher runs first)"),
          ("workdir", "workdir", "a directory here, shipped as its working directory"),
          ("pip", "pip", "numpy<3 requests  (pip requirements, Ray builds the env)"),
          ("venv", "venv", "/opt/venv  (a virtualenv on the node)"),
          ("image", "image", "python:3.12  (a container, podman on the node)"))
CONDITIONS = {"ok": "dependencies", "notok": "after_notok", "any": "after_any"}  # as --after, --after-notok, ...


def one_line(exc: ValidationError) -> str:
    """A schema error in the daemon's words: `field: message (and N more)`."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {msg}{more}" if loc and not msg.startswith(f"{loc}:") else msg + more


def number(text: str, field: str, kind: type[float] | type[int]) -> float | int:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{field}: {'a whole number' if kind is int else 'a number'}, not {text!r}") from None


def build_spec(form: dict[str, str]) -> dict[str, Any]:
    """The form's text fields -> a JobSpec dict; raises ValueError with one line."""
    command, script = form["command"], form["script"]
    if bool(command) == bool(script):
        raise ValueError("give a command or a script (not both)")
    spec: dict[str, Any] = {}
    if script:
        spec.update(script_spec(script).model_dump(mode="json", exclude_defaults=True))
    else:
        try:
            spec.update(kind="command", command=shlex.split(command))
        except ValueError as exc:
            raise ValueError(f"command: {exc}") from None
    if form["name"]:
        spec["name"] = form["name"]
    resources: dict[str, Any] = {}
    for field in ("cpu", "gpu"):
        if form[field]:
            resources[field] = number(form[field], field, float)
    if form["memory"]:
        resources["memory"] = form["memory"]
    if form["custom"]:
        custom = {}
        for pair in filter(None, (p.strip() for p in form["custom"].split(","))):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"custom: {pair!r} is not NAME=AMOUNT")
            custom[key.strip()] = number(value.strip(), f"custom {key.strip()}", float)
        resources["custom_resources"] = custom
    if resources:
        spec["resources"] = resources
    for dep in filter(None, (d.strip() for d in form["dependencies"].split(","))):
        condition, sep, job = dep.rpartition(":")
        key = CONDITIONS.get(condition.strip().lower() if sep else "ok")
        if key is None:
            raise ValueError(f"after: {dep!r}: a condition is ok:, notok: or any:")
        spec.setdefault(key, []).append(job.strip())
    if form.get("array"):
        spec["array"] = form["array"]
    if form["retries"]:
        spec["retry_policy"] = {"max_retries": number(form["retries"], "retries", int)}
    if form["priority"]:
        spec["priority"] = number(form["priority"], "priority", int)
    if form.get("pip"):
        try:
            spec["pip"] = shlex.split(form["pip"])
        except ValueError as exc:
            raise ValueError(f"pip: {exc}") from None
    spec.update({key: form[key] for key in ("workdir", "venv", "image") if form.get(key)})
    return spec


class SubmitScreen(ModalScreen[str | None]):
    """Dismissed with the new job's id, or None when closed."""

    CSS_PATH = "../views.tcss"
    # tab and shift+tab move between fields when the app reads the key, not after it has bubbled up
    # from the field: a key typed after a tab goes to the next field even in a burst (a paste, a fast
    # typist, a busy app), where the non-priority tab of Screen moved the focus only after the next
    # keys had gone to the old field
    BINDINGS = [Binding("escape", "close", "Close"), Binding("ctrl+s", "submit", "Submit"),
                Binding("tab", "move(1)", "Next field", show=False, priority=True),
                Binding("shift+tab", "move(-1)", "Previous field", show=False, priority=True)]

    class Submitted(Message):
        def __init__(self, job_id: str) -> None:
            super().__init__()
            self.job_id = job_id

    def __init__(self) -> None:
        super().__init__(classes="form-screen")

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="submit"):
            yield Static("[b]Submit a job[/]", classes="view-title")
            with Grid(classes="form"):
                for field, label, hint in FIELDS:
                    yield Label(label)
                    yield Input(placeholder=hint, id=field, compact=True)
            yield Static("", id="form-error", classes="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Submit", id="do-submit", variant="primary", compact=True)
                yield Button("Close", id="close", compact=True)

    def on_mount(self) -> None:
        self.set_focus(self.query_one("#command", Input))  # now, not later: the next key goes there

    def action_move(self, step: int) -> None:
        self.focus_next() if step > 0 else self.focus_previous()

    async def _settled(self) -> None:
        """Wait until every field has taken the keys already sent to it: each field reads its keys
        in its own task, so a submit key may be handled before the key typed just ahead of it in
        another field."""
        loop = asyncio.get_running_loop()
        done = []
        for box in self.query(Input):
            future: asyncio.Future[None] = loop.create_future()
            box.call_later(future.set_result, None)
            done.append(future)
        await asyncio.gather(*done)

    @on(Button.Pressed, "#do-submit")
    @on(Input.Submitted)
    async def action_submit(self) -> None:
        if self.query_one("#do-submit", Button).disabled:
            return  # one is on its way (enter pressed twice): not a second job
        await self._settled()
        form = {field: self.query_one(f"#{field}", Input).value.strip() for field, _, _ in FIELDS}
        try:
            spec = build_spec(form)
        except (ValueError, SageOpsError) as exc:  # SageOpsError: an unreadable script
            self._error(getattr(exc, "message", None) or str(exc))
            return
        self._error("")
        self.query_one("#do-submit", Button).disabled = True
        self.send(spec)

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)

    @work(exclusive=True, group="submit")
    async def send(self, spec: dict[str, Any]) -> None:
        """Submit; a REJECTED job (e.g. an unknown dependency) is an error too, with its reason."""
        try:
            view = await self.app.client.submit_job(spec)  # type: ignore[attr-defined]
        except ValidationError as exc:
            self.post_message(Failed(one_line(exc)))
            return
        except SageOpsError as exc:
            self.post_message(Failed(exc.message))
            return
        if view.status is JobStatus.REJECTED:
            self.post_message(Failed(f"job {view.id} rejected: {view.reason}"))
            return
        self.post_message(self.Submitted(view.id))

    @on(Submitted)
    def _submitted(self, message: Submitted) -> None:
        self.dismiss(message.job_id)

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        self._error(message.text)
        self.query_one("#do-submit", Button).disabled = False

    def _error(self, text: str) -> None:
        self.query_one("#form-error", Static).update(Text(text, style="bold red", no_wrap=True, overflow="ellipsis"))
