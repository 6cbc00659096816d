"""The one base class for problems a user can fix; the CLI prints them on one line, exit code 2."""


class UserError(ValueError):
    """A user-fixable problem; the message names what is wrong and what to change."""
