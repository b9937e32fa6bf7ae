"""The web dashboard: server-rendered pages the daemon serves beside its API. It is one more
client of the API, like the TUI: every figure on a page comes from an API call made in-process
with the visitor's own token, so tenant isolation, roles and audit are the API's, once."""
