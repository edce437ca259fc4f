"""The exception types for problems a user can act on (bad flags, bad files, a run that diverged).

The CLI prints the message alone, without a traceback, and exits with the error's ``exit_code``.
"""


class UserError(Exception):
    """A problem with what the user gave us: the message names the flag or file, the value, and what is valid."""

    exit_code = 2


class Diverged(UserError):
    """Training produced a non-finite loss or gradient norm; nothing after the last finite checkpoint was saved."""

    exit_code = 3
