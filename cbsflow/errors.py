"""Errors that speak to the user."""


class UserError(Exception):
    """A mistake in the user's input: the message says what, where and how to fix it."""


EXIT_PREEMPTED = 75  # sysexits' EX_TEMPFAIL: stopped on request with a checkpoint written; rerun to resume


class Preempted(UserError):
    """Training stopped on SIGTERM / SIGUSR1 (a cluster's warning) after writing a checkpoint."""
