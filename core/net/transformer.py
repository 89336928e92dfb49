"""Multi-scale spatial-temporal transformer (MSST_former).

Each of the 4 attention heads cuts its 64-channel share of the features into patches of a
different size (40, 20, 10, 5 px at half LR resolution); every patch of every frame is a token,
and attention runs over all tokens of the window. Large patches capture scene-wide motion,
small ones local detail. This is why LR height and width are padded to multiples of 80.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .spec import ATTENTION_COSINE, ATTENTION_DOT, ATTENTIONS, PATCH_SIZES


# Cosine attention's temperature: starts where scores of similar and dissimilar patches differ
# by a few logits (selective, but not yet one-hot) and is capped so softmax stays trainable.
COSINE_TEMPERATURE_INIT = 10.0
COSINE_TEMPERATURE_MAX = 100.0


class MultiScaleAttention(nn.Module):
    def __init__(self, d_model: int = 256, patch_sizes=PATCH_SIZES, attention: str = ATTENTION_DOT):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.patch_sizes = tuple(patch_sizes)
        self.attention = attention
        self.kernel = KERNEL_AUTO  # a plain attribute (not in the state_dict); see set_kernel
        if attention == ATTENTION_COSINE:  # log-temperature per head
            self.log_temperature = nn.Parameter(torch.full((len(self.patch_sizes),), math.log(COSINE_TEMPERATURE_INIT)))
        self.query_embedding = nn.Conv2d(d_model, d_model, 1)
        self.value_embedding = nn.Conv2d(d_model, d_model, 1)
        self.key_embedding = nn.Conv2d(d_model, d_model, 1)
        self.output_linear = nn.Sequential(nn.Conv2d(d_model, d_model, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))

    @staticmethod
    def _tokens(x: torch.Tensor, b: int, t: int, p: int, channels_last: bool = False) -> torch.Tensor:
        """(b*t, c, h, w) -> (b, t*(h/p)*(w/p), c*p*p): one token per patch per frame.

        A token's c*p*p values are ordered as x's memory holds them (channels first for NCHW,
        channels last for ``channels_last``), so the copy reads contiguous runs. The order is
        arbitrary: scores, centring and normalisation sum over it, and _untokens inverts it."""
        _, c, h, w = x.shape
        if channels_last:
            x = x.permute(0, 2, 3, 1).view(b, t, h // p, p, w // p, p, c).permute(0, 1, 2, 4, 3, 5, 6)
        else:
            x = x.view(b, t, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(b, t * (h // p) * (w // p), c * p * p)

    @staticmethod
    def _untokens(y: torch.Tensor, b: int, t: int, c: int, h: int, w: int, p: int,
                  channels_last: bool = False) -> torch.Tensor:
        """Inverse of _tokens for an x of that layout."""
        if channels_last:
            y = y.view(b, t, h // p, w // p, p, p, c).permute(0, 1, 2, 4, 3, 5, 6)
            return y.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        y = y.view(b, t, h // p, w // p, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return y.reshape(b * t, c, h, w)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, head: int) -> torch.Tensor:
        """q, k, v (B, L, D) tokens of one head -> (B, L, D)."""
        if self.attention == ATTENTION_DOT:  # upstream: 1/sqrt(token dim)
            return attention(q, k, v, 1.0 / math.sqrt(q.shape[-1]), self.kernel)
        # Centred over the window's tokens first: the embeddings' biases are shared by every token
        # and would otherwise make all cosines alike; what is left is how patches differ.
        tau = self.log_temperature[head].clamp(max=math.log(COSINE_TEMPERATURE_MAX)).exp()
        q, k = (F.normalize(z - z.mean(dim=1, keepdim=True), dim=-1).to(v.dtype) for z in (q.float(), k.float()))
        q = q * tau.to(v.dtype)
        return attention(q, k, v, 1.0, self.kernel)

    def forward(self, x: torch.Tensor, b: int) -> torch.Tensor:
        """x (B*T, d_model, H, W) -> same shape; attention over all patches of all T frames."""
        bt, c, h, w = x.shape
        t = bt // b
        q, k, v = self.query_embedding(x), self.key_embedding(x), self.value_embedding(x)
        dh = c // len(self.patch_sizes)
        cl = v.stride(1) == 1 and c > 1  # channels innermost: the convolutions' channels_last output
        heads = []
        for i, p in enumerate(self.patch_sizes):
            sl = slice(i * dh, (i + 1) * dh)
            qt, kt, vt = (self._tokens(z[:, sl], b, t, p, cl) for z in (q, k, v))
            yt = self._attend(qt, kt, vt, i)
            heads.append(self._untokens(yt, b, t, dh, h, w, p, cl))
        # Upstream adds the input here as well as in the block, so x becomes 2x + attn; kept so
        # that upstream checkpoints behave as trained.
        return x + self.output_linear(torch.cat(heads, dim=1))


# How attention is computed: "sdpa" is torch's scaled_dot_product_attention everywhere; "auto"
# replaces it where it is slow (see attention()).
KERNEL_AUTO, KERNEL_SDPA = "auto", "sdpa"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, kernel: str = KERNEL_AUTO) -> torch.Tensor:
    """softmax(q k^T * scale) v for (B, L, D) tokens.

    scaled_dot_product_attention, except for bf16/fp16 on the CPU with ``kernel`` "auto": there
    SDPA falls back to a math path that upcasts to float32, so both matmuls (most of the
    attention's FLOPs, tokens of 64 x p^2 values) ran at fp32 speed, ~4x slower than bf16 on
    CPUs with bf16 units. Here the matmuls stay in the input's precision (float32
    accumulation, logits rounded once to it, as every convolution's output is under
    autocast) and softmax runs in float32."""
    if kernel == KERNEL_SDPA or q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    logits = torch.bmm(q, k.transpose(1, 2)).float().mul_(scale)
    return torch.bmm(torch.softmax(logits, dim=-1).to(v.dtype), v)


def set_kernel(model: nn.Module, kernel: str = KERNEL_AUTO) -> None:
    """Compute every attention in ``model`` with ``kernel`` ("auto" or "sdpa")."""
    if kernel not in (KERNEL_AUTO, KERNEL_SDPA):
        raise ValueError(f"attention kernel {kernel!r}: expected {KERNEL_AUTO!r} or {KERNEL_SDPA!r}")
    for m in model.modules():
        if isinstance(m, MultiScaleAttention):
            m.kernel = kernel


class FeedForward(nn.Module):
    def __init__(self, d_model: int = 256):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(d_model, d_model, 3, padding=2, dilation=2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(d_model, d_model, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class TransformerBlock(nn.Module):
    def __init__(self, d_model: int = 256, patch_sizes=PATCH_SIZES, attention: str = ATTENTION_DOT):
        super().__init__()
        self.attention = MultiScaleAttention(d_model, patch_sizes, attention)
        self.feed_forward = FeedForward(d_model)

    def forward(self, x: torch.Tensor, b: int) -> torch.Tensor:
        x = x + self.attention(x, b)
        return x + self.feed_forward(x)


class Deconv(nn.Module):
    """Bilinear x2 then 3x3 conv: avoids the checkerboard of transposed convs."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))


class MSSTFormer(nn.Module):
    """Encoder (to H/2, 256 ch) -> transformer over all frames -> decoder, added to the input."""

    def __init__(self, nf: int = 64, d_model: int = 256, n_blocks: int = 1, patch_sizes=PATCH_SIZES,
                 attention: str = ATTENTION_DOT):
        super().__init__()
        lrelu = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        # declared first: upstream's state_dict lists the transformer before the encoder
        self.transformer = nn.ModuleList([TransformerBlock(d_model, patch_sizes, attention) for _ in range(n_blocks)])
        self.encoder = nn.Sequential(
            nn.Conv2d(nf, 64, 3, 1, 1), lrelu(),
            nn.Conv2d(64, 128, 3, 2, 1), lrelu(),
            nn.Conv2d(128, d_model, 3, 1, 1), lrelu(),
        )
        self.decoder = nn.Sequential(
            Deconv(d_model, 128), lrelu(),
            nn.Conv2d(128, 64, 3, 1, 1), lrelu(),
            nn.Conv2d(64, nf, 3, 1, 1), lrelu(),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, T, nf, H, W) -> same shape."""
        b, t, c, h, w = feats.shape
        x = self.encoder(feats.reshape(b * t, c, h, w))
        for block in self.transformer:
            x = block(x, b)
        x = torch.tanh(self.decoder(x))
        return feats + x.view(b, t, c, h, w)
