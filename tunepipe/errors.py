"""The two failures a stage reports: a problem the user can fix, and one a later try may not meet."""
from __future__ import annotations


class StageError(Exception):
    """A problem the user can fix (bad input, bad params, no network). Printed as one line, no traceback."""

# EX_TEMPFAIL from sysexits.h: the stage failed in a way a later try may not (a download timed out), so the
# Prefect flow retries it; every other failure exits 2 and is final.
TRANSIENT_EXIT = 75


class TransientError(StageError):
    """A failure that may pass on a later try: a network timeout, a server error, a dropped connection."""
