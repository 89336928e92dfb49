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
