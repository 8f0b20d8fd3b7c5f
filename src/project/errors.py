"""The one exception type for problems in what the user gave us (config, data, paths).

The CLI prints its message alone, without a traceback, and exits with status 2.
"""


class UserError(Exception):
    """A problem the user can fix: the message must name the thing to fix.

    Messages are remembered so that the CLI can pick ours out of a config-parsing error,
    where jsonargparse buries the cause under the values it tried.
    """

    raised: list[str] = []

    def __init__(self, message: str) -> None:
        super().__init__(message)
        UserError.raised.append(message)
