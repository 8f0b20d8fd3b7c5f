"""The one exception type for problems in what the user gave us (config, data, paths, checkpoints).

The CLI prints its message alone, as one ``error:`` line without a traceback, and exits with status 2.
"""


class UserError(Exception):
    """A problem the user can fix: the message must name the thing to fix."""


def find_user_error(error: BaseException | None) -> UserError | None:
    """The ``UserError`` behind ``error``, if any: jsonargparse and Lightning wrap the errors raised
    while they build the classes, so the cause may sit a few links down the exception chain."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
