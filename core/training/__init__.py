"""Making and judging weights: synthetic satellite video from real aerial stills, the LR
degradation, clip datasets, training, and evaluation (PSNR/SSIM against the bicubic + linear
blend baseline). Optical flow comes from ``core.run.flow``, exactly as at inference."""
