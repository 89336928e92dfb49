"""``mstt-stvsr bench``: network throughput and end-to-end timing on this machine, as ratios
measured in one run. It calls the engine through its arguments only.

``config`` (what to measure, one frozen value), ``hardware`` (device facts and peak TFLOP/s),
``flops`` (FLOPs counted on the meta device), ``throughput`` (the network timed per tile,
batch and precision), ``synthetic`` (the end-to-end input stack), ``memory`` (peak RSS),
``end_to_end`` (``pipeline.run_stack`` timed by stage), ``suite`` (all of these in one
process), ``report`` (ratios, text, JSON); ``command`` is ``mstt-stvsr bench``."""
