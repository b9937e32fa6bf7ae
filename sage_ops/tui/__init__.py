"""The Textual TUI (`sage-ops tui`): a k9s-like live view of the daemon's jobs, logs and cluster.

Imported only by `sage-ops tui` (lazily), so the CLI stays free of textual."""
