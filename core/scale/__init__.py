"""Scale-out on Dask distributed: one stack split into tasks a scheduler spreads over workers.
Imported only when a cluster is asked for (``--cluster``): the single-process path never
imports Dask."""
