"""The network's facts, without torch: every other module imports these instead of restating them.

MSTT takes 4 LR frames (the odd frames 1, 3, 5, 7 of a 7-frame clip) and makes all 7 HR frames,
4x finer in each axis. Its transformer cuts half-resolution features into patches of 40, 20, 10
and 5 pixels, so LR height and width are padded to multiples of 2 x 40 = 80.
"""
SCALE = 4  # HR pixels per LR pixel along each axis
N_IN = 4  # LR frames per network window
N_OUT = 2 * N_IN - 1  # HR frames per window: the inputs and one new frame between each pair
INPUT_POS = tuple(range(0, N_OUT, 2))  # output positions of the input times (0, 2, 4, 6)
NEW_POS = tuple(range(1, N_OUT, 2))  # output positions of the new frames (1, 3, 5)
PATCH_SIZES = (40, 20, 10, 5)  # attention patch side per head, at half LR resolution
MULTIPLE = 2 * max(PATCH_SIZES)  # LR size multiple: stride-2 encoder, largest patch 40
# Flows the network takes per consecutive pair, [applied to the earlier frame, applied to the
# later frame]: ours are from the middle time to each frame (half the motion); upstream's
# checkpoints were trained with full frame-to-frame flows (backward and forward).
FLOW_MIDDLE, FLOW_FULL = "middle", "full"
# How attention scores tokens: upstream's scaled dot product ("dot"), or cosine similarity times
# a learned per-head temperature ("cosine", on tokens centred over the window). Upstream's tokens
# have 64 x p^2 dimensions, so its 1/sqrt(dim) scale leaves logits near zero and every head
# averages all tokens uniformly (measured: logit std 0.001-0.003 with our trained weights);
# cosine scores are O(1) whatever the feature magnitude, so attention can select matching patches.
ATTENTION_DOT, ATTENTION_COSINE = "dot", "cosine"
ATTENTIONS = (ATTENTION_DOT, ATTENTION_COSINE)
