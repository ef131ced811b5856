"""The one error type of the fine-tuning program: its message says what to do next."""


class FineTuneError(Exception):
    """A problem that stops training; ``str()`` is the one message to show the user."""
