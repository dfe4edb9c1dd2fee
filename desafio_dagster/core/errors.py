"""The project's explained errors: each message names the problem and the fix."""


class DesafioError(RuntimeError):
    """An error whose message is meant for the user, not a traceback. Retrying will not help."""


class TransientError(DesafioError):
    """A fault that may pass on its own (a lost or refused connection, a lost Spark executor):
    the step is retried from a fresh snapshot."""


class PublishError(DesafioError):
    """The output could not be published; the previous output is untouched."""


class PublishRaceLost(PublishError):
    """Another export published the output after this one started from what it published before."""


class PublishOutcomeUnknown(PublishError):
    """The pointer's write may have landed, and whether it did cannot be read back: the version is kept (never
    discarded, readers may be using it); the next export's cleanup judges it by the pointer."""


# A write that found its disk full, as Python, Java and libc say it.
DISK_FULL = ("No space left on device", "Disk quota exceeded")


def disk_full(cause: str) -> str:
    """The explained message of an export that ran out of disk space for its output."""
    return (f"the output's disk is full ({cause}): free space where DESAFIO_OUTPUT_DIR points, or point it at a "
            f"larger disk; an export needs room for its new version besides the published one until it is "
            f"published. Nothing was published; the previous output is untouched")


def first_line(error: BaseException) -> str:
    """The first non-blank line of an error's text (a driver's or a server's often has many)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
