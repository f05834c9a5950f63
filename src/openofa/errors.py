"""The one exception type users see. Its message is a single line naming the problem
(file, line, field); the CLI prints it as ``error: <message>`` and exits with status 2."""


class OFAError(ValueError):
    """Bad input: a missing or corrupt file, an unknown name, a value out of range."""


class OFAWarning(UserWarning):
    """Something the run can go on with but the user should know (words the model cannot read);
    the CLI prints it as ``warning: <message>``."""
