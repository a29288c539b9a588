"""The one exception type users see: a problem with their input, described in one line."""


class SpikesegError(Exception):
    """A problem with user input (a path, a file, a config key, a checkpoint).

    The message is a single line that says what is wrong and how to fix it; the CLI prints
    it without a traceback and exits with status 2.
    """
