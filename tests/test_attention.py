"""The transformer's attention: upstream's dot product and our cosine variant.

Upstream scales q.k by 1/sqrt(token dim), where a token is a whole 64 x p x p patch; with the
small, bias-dominated embeddings a trained network has, every head then averages all tokens
uniformly and the network cannot pick the matching patch of a neighbouring frame. The cosine
variant must select it whatever the embeddings' scale and shared offset."""
import math

import pytest
import torch

from mstt_stvsr.core.errors import WeightsError
from mstt_stvsr.core.net.model import MSTT
from mstt_stvsr.core.net.transformer import MultiScaleAttention
from mstt_stvsr.core.net.weights import load_model, save_weights
from mstt_stvsr.core.training.trainer import init_from

from nets import TINY, tiny_mstt


def patch_tokens(scale: float, offset: float, n: int = 16, dim: int = 64, seed: int = 0):
    """n distinct random tokens times ``scale`` plus a shared ``offset``: queries equal keys, so
    the right answer for token i is token i."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, n, dim, generator=g)
    tokens = base * scale + offset
    return tokens, torch.eye(n)[None]  # values: one-hot, so the output is the attention matrix


@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (1e-3, 0.0), (1e-3, 0.05)])
def test_cosine_attention_selects_the_matching_token_at_any_scale(scale, offset):
    att = MultiScaleAttention(d_model=8, patch_sizes=(1, 1, 1, 1), attention="cosine")
    q, v = patch_tokens(scale, offset)
    weights = att._attend(q, q, v, head=0)[0]
    # temperature 10 on cosines of 1 (itself) vs ~0 (random 64-d): e^10 / (e^10 + 15 e^~0)
    assert weights.diagonal().min() > 0.99


def test_dot_attention_is_uniform_on_small_tokens_which_is_why_cosine_exists():
    """Negative control: the same small tokens with upstream's scale give near-uniform weights
    (the failure measured on the trained network), so the test above can fail."""
    att = MultiScaleAttention(d_model=8, patch_sizes=(1, 1, 1, 1), attention="dot")
    q, v = patch_tokens(1e-3, 0.05)
    weights = att._attend(q, q, v, head=0)[0]
    assert (weights - 1 / 16).abs().max() < 1e-3


def test_cosine_temperature_is_learned_and_capped():
    att = MultiScaleAttention(d_model=8, patch_sizes=(1, 1, 1, 1), attention="cosine")
    assert att.log_temperature.requires_grad and att.log_temperature.shape == (4,)
    q, v = patch_tokens(1.0, 0.0)
    att._attend(q, q.flip(1), v, head=2).sum().backward()
    assert att.log_temperature.grad[2] != 0 and att.log_temperature.grad[[0, 1, 3]].abs().max() == 0
    with torch.no_grad():
        att.log_temperature.fill_(math.log(1e6))
    assert torch.isfinite(att._attend(q, q, v, head=0)).all()


def test_cosine_network_saves_and_loads_with_its_attention(tmp_path):
    m = tiny_mstt(attention="cosine")
    with torch.no_grad():
        m.MSST_former.transformer[0].attention.log_temperature.add_(0.5)
    path = save_weights(m, tmp_path / "cos.safetensors")
    again = load_model(path)
    assert again.attention == "cosine" and "cosine attention" in again.variant
    lr = torch.rand(1, 4, 3, 20, 20)
    flows = torch.zeros(1, 3, 4, 20, 20)
    with torch.no_grad():
        assert torch.allclose(m(lr, flows), again(lr, flows), atol=1e-6)  # same float32 path


def test_files_without_the_key_are_dot_attention(tmp_path):
    """Weights saved before the option existed (and upstream's) keep their behaviour."""
    path = save_weights(tiny_mstt(), tmp_path / "dot.safetensors")
    m = load_model(path)
    assert m.attention == "dot" and "attention" not in m.config


def test_upstream_exact_refuses_cosine():
    with pytest.raises(ValueError, match="upstream-exact"):
        MSTT(**TINY, upstream_exact=True, attention="cosine")


def test_training_starts_a_cosine_network_from_dot_weights():
    dot = tiny_mstt()
    cos = MSTT(**TINY, attention="cosine")
    init_from(cos, dot.state_dict(), "dot weights")
    assert torch.equal(cos.conv_last.weight, dot.conv_last.weight)
    assert torch.allclose(cos.MSST_former.transformer[0].attention.log_temperature.exp(), torch.full((4,), 10.0))
    wrong = MSTT(**{**TINY, "nf": 16}, attention="cosine")
    with pytest.raises(WeightsError, match="does not fit"):
        init_from(wrong, dot.state_dict(), "dot weights")


@pytest.mark.parametrize("kind", ["cosine", "dot"])
def test_reduced_precision_attention_on_cpu_matches_float32(kind):
    """bf16 on the CPU takes its own path (SDPA's CPU fallback computes bf16 in float32, 4x
    slower); it must compute the same softmax(q k^T s) v, in the regimes the network has:
    unit-norm cosine tokens times a temperature of 10, and upstream's dot tokens scaled by
    1/sqrt(dim). Tolerance 3 % of the values' range: the logits are rounded once to bf16's 8-bit
    mantissa (±0.02 at |logit| 10) on top of the rounding of q, k and v themselves."""
    import torch.nn.functional as F

    from mstt_stvsr.core.net.transformer import attention

    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 60, 400, generator=g) for _ in range(3))
    k[:, :30] = q[:, :30] + 0.3 * k[:, :30]  # half the keys match their query: a peaked softmax
    if kind == "cosine":
        q, k, scale = F.normalize(q, dim=-1) * 10.0, F.normalize(k, dim=-1), 1.0
    else:
        scale = 1.0 / 20.0
    q, k, v = (z.bfloat16() for z in (q, k, v))
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=scale)
    got = attention(q, k, v, scale).float()
    assert (got - want).abs().max() < 0.03 * v.float().abs().max()
    wrong = attention(q, k, v, scale * 0.5).float()
    assert (wrong - want).abs().max() > 0.1 * v.float().abs().max()  # the check can tell a wrong scale


def test_attention_kernel_is_switchable_for_the_benchmark():
    """The benchmark times the previous default with torch's SDPA; both kernels agree."""
    from mstt_stvsr.core.net.transformer import KERNEL_SDPA, set_kernel

    m = tiny_mstt(attention="cosine")
    lr, flows = torch.rand(1, 4, 3, 20, 20), torch.zeros(1, 3, 4, 20, 20)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        auto = m(lr, flows).float()
        set_kernel(m, KERNEL_SDPA)
        assert all(a.kernel == KERNEL_SDPA for a in m.modules() if hasattr(a, "kernel"))
        sdpa = m(lr, flows).float()
    assert (auto - sdpa).abs().max() < 0.02  # bf16 rounding of logits, on outputs in [0, 1]
    with pytest.raises(ValueError, match="attention kernel"):
        set_kernel(m, "flash")
