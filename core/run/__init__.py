"""The job of turning a stack into 2N-1 HR frames: ``options`` (what was asked, one frozen
value), ``windows`` (which network call makes which output), ``tiling`` (tiles, blend weights,
streaming blend), ``flow`` and ``scene_flow`` (OpenCV optical flow of whole frames, cropped per
tile), ``device`` (device, precision, threads, tile size, out-of-memory), ``cost`` (FLOPs and
tile choice), ``threads`` and ``compile`` (keeping the device busy), ``progress``, and
``pipeline``, the run itself over all of these; ``command`` is ``mstt-stvsr run``."""
