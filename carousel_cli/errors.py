"""What the command line reports instead of a traceback: one line, and an exit code."""

from __future__ import annotations

#: exit codes: 0 done (all succeeded), 1 some events failed, 2 bad input, 3 timed out,
#: 4 a service could not be reached or refused the call, 5 (``status``) every service
#: answered but one is not ready
FAILED, BAD_INPUT, TIMED_OUT, SERVICE, NOT_READY = 1, 2, 3, 4, 5


class CliError(Exception):
    """A reason to stop, said in one line."""

    code = SERVICE


class InputError(CliError):
    """The user's input (a file, an option) is wrong."""

    code = BAD_INPUT


class ServiceError(CliError):
    """A service is unreachable or refused the call."""

    code = SERVICE
