"""Who may do what: identities, tokens, rate limits (the database side is storage/accounts.py)."""
