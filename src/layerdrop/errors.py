"""The one exception type for mistakes a user can make (bad flags, bad files).

The CLI prints its message alone, without a traceback, and exits non-zero.
"""


class UserError(Exception):
    """A problem with what the user gave us: the message names the flag or file, the value, and what is valid."""
