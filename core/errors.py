"""Errors a user can act on. Each message names the file or value at fault.

The CLI prints ``str(err)`` on one line and exits non-zero; the QGIS algorithm raises it as a
QgsProcessingException. Anything else escaping is a bug.
"""


class MsttError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class InputError(MsttError, ValueError):
    """The frames, times or options given cannot be processed (mismatch, unreadable, too few)."""


class WeightsError(MsttError, ValueError):
    """A weights file is missing, unreadable or does not fit the network."""


class Canceled(MsttError):
    """The user canceled a run; partial outputs have been removed."""


class StorageError(MsttError, OSError):
    """Reading the inputs or writing the outputs failed (full disk, damaged file, lost
    connection); what the run had written has been removed."""


class Interrupted(Canceled):
    """A signal (SIGTERM, SIGHUP, SIGINT) stopped the run; its temporary files have been removed."""

    def __init__(self, signum: int, name: str, written: str = "no output was written"):
        super().__init__(f"interrupted by {name}; {written}")
        self.signum, self.name = signum, name
