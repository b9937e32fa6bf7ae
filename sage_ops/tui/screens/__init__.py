"""The TUI's screens, one per file; each reaches the daemon through `self.app.client`."""
