"""The project's explained errors: each message names the problem and the fix."""


class DesafioError(RuntimeError):
    """An error whose message is meant for the user, not a traceback. Retrying will not help."""


class TransientError(DesafioError):
    """A fault that may pass on its own (a lost or refused connection, a lost Spark executor):
    the step is retried from a fresh snapshot."""


def first_line(error: Exception) -> str:
    """The first non-blank line of an error's text (a driver's or a server's often has many)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
