"""The one exception type users see. Its message is a single line naming the problem
(file, line, field); the CLI prints it as ``error: <message>`` and exits with status 2."""


class OFAError(ValueError):
    """Bad input: a missing or corrupt file, an unknown name, a value out of range."""
