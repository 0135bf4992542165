"""Errors that speak to the user."""


class UserError(Exception):
    """A mistake in the user's input: the message says what, where and how to fix it."""
