"""The project's explained errors: each message names the problem and the fix."""


class DesafioError(RuntimeError):
    """An error whose message is meant for the user, not a traceback."""
