"""Errors a user can cause. The CLI prints them as one line and exits 2; anything else is our bug."""


class UserError(Exception):
    """Bad input from the user: unknown name, malformed file or config, broken plugin."""
