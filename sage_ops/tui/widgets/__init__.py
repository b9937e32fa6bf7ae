"""The TUI's widgets, one per file; they show data and never call the daemon themselves."""
