"""Secret environment values (`--secret-env K=V`) are sealed before they are stored: AES-SIV with
a key only the daemon holds (a 0600 file; daemons sharing a database share it). The database,
the API and `--json` only ever see the sealed form or `***`; the value is opened at dispatch,
handed to the job's process, and masked in its log lines.

SIV is deterministic: the same value seals the same way, so a retried submit (same
Idempotency-Key) is recognised as the same request."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from ... import paths
from ...errors import Invalid, SageOpsError
from ...schemas import SEALED_PREFIX as PREFIX
from ...schemas import JobSpec


def load_key(path: Path) -> bytes:
    """The daemon's sealing key, made once (owner-only) on first use."""
    return base64.b64decode(paths.secret_file(path, lambda: base64.b64encode(AESSIV.generate_key(512)).decode()))


class Sealer:
    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._box: AESSIV | None = None

    @property
    def box(self) -> AESSIV:
        if self._box is None:  # only daemons that see a secret need the key
            self._box = AESSIV(load_key(self.key_file))
        return self._box

    def derive(self, label: bytes) -> bytes:
        """A key for another use (`label`), derived from the sealing key: every daemon of the
        database holds it, with no file of its own."""
        return hmac.new(load_key(self.key_file), b"sage-ops " + label, hashlib.sha256).digest()

    def seal(self, spec: JobSpec) -> JobSpec:
        if not spec.secret_env:
            return spec
        if any(v.startswith(PREFIX) for v in spec.secret_env.values()):
            raise Invalid(f"secret_env: a value may not start with {PREFIX!r} (the daemon's own sealed form)")
        sealed = {k: PREFIX + base64.urlsafe_b64encode(self.box.encrypt(v.encode(), [k.encode()])).decode()
                  for k, v in spec.secret_env.items()}
        return spec.model_copy(update={"secret_env": sealed})

    def unseal(self, spec: JobSpec) -> dict[str, str]:
        out = {}
        for k, v in spec.secret_env.items():
            if not v.startswith(PREFIX):
                raise SageOpsError(f"secret env {k} is not sealed", "secret")
            try:
                out[k] = self.box.decrypt(base64.urlsafe_b64decode(v[len(PREFIX):]), [k.encode()]).decode()
            except (InvalidTag, ValueError):
                raise SageOpsError(f"secret env {k} cannot be opened: this daemon's key ({self.key_file}) is not "
                                   "the one that sealed it", "secret") from None
        return out


def redacted(spec: JobSpec) -> JobSpec:
    """The spec as anyone may see it: secret values are `***`; a pipeline's pickled code is left
    out (megabytes no reader can use; its plan and size stay)."""
    update: dict[str, object] = {}
    if spec.secret_env:
        update["secret_env"] = dict.fromkeys(spec.secret_env, "***")
    if spec.pipeline is not None and spec.pipeline.payload is not None:
        update["pipeline"] = spec.pipeline.model_copy(update={"payload": None})
    return spec.model_copy(update=update) if update else spec
