"""Scale-out on Dask distributed: one stack split into tasks a scheduler spreads over workers.
Imported only when a cluster is asked for (``--cluster``): the single-process path never
imports Dask, and without Dask installed this import is a clear error naming what to install."""
from ..errors import MsttError

MISSING_DASK = "the cluster option needs the Python packages dask and distributed (pip install dask distributed)"

try:
    import distributed  # noqa: F401
except ImportError:
    raise MsttError(MISSING_DASK) from None
