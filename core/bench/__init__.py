"""``mstt-stvsr bench``: network throughput and end-to-end timing on this machine, as ratios
measured in one run. It calls the engine through its arguments only."""
