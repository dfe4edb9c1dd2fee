"""The project's explained errors: each message names the problem and the fix."""


class DesafioError(RuntimeError):
    """An error whose message is meant for the user, not a traceback. Retrying will not help."""


class TransientError(DesafioError):
    """A fault that may pass on its own (a lost or refused connection, a lost Spark executor):
    the step is retried from a fresh snapshot."""
