"""Long-running parts beside the queue: leadership, node provisioning, the event stream, the
metrics sampler."""
