"""Making and judging weights, with optical flow from ``core.run.flow`` exactly as at inference.

Synthetic satellite video: ``imagery`` (the ground: real stills or procedural texture),
``shapes`` (anti-aliased polygons), ``traffic`` (moving vehicles and objects), ``scenes`` (a
procedural city or a real still), ``clips`` (the platform camera, rendering, ``make_clip``),
``sample`` (the shipped sample stack) and ``synth`` (``mstt-stvsr synth``: clip datasets).
``degrade`` is the LR degradation; ``datasets`` reads clips in three layouts. Training:
``config``, ``crops`` (augmented crops and the flow cache), ``trainer`` (model, optimizer,
step, checkpoints) and ``train`` (``mstt-stvsr train``). ``metrics`` and ``evaluate``
(``mstt-stvsr eval``) score a model against the bicubic + linear blend baseline. ``finetune``
(``mstt-stvsr finetune``) adapts weights to a user's own video with those pieces: native frames
(``native_video``: read, checked, split) as ground truth, a held-out validation before and
after, the better kept.
"""
