"""Linear attention computed in pixel chunks: the CPU inference kernel of
:class:`~diffusers_mrs.models.unet_attention.MRLinearAttention` (``docs/kernels.md``).

Per head, linear attention is ``out = W_out (c C^T softmax_d(q)) + b`` with the
``d x d`` context ``C = softmax_N(k) v^T`` and ``c = d^-1/2 / N``. Only ``C`` needs every
pixel; the rest is per pixel. So the keys and values are projected and reduced chunk by
chunk with a running maximum (the softmax over pixels accumulated exactly, as in flash
attention), and the queries are projected, normalised and mapped back chunk by chunk
through ``M = W_out c C^T``, which folds the per-head context product and the output
projection into one matrix. Each chunk's tensors fit in the CPU cache, where the
whole-image formula streams tensors of ``3 x heads x dim_head`` channels at full
resolution through memory several times.
"""

from __future__ import annotations

import torch

# Elements (batch x heads x dim_head x pixels) of one chunk's queries: about 1 MiB in float32.
CHUNK_ELEMENTS = 2**18
MIN_CHUNK_PIXELS = 1024


def pixel_chunk(batch: int, inner: int) -> int:
    """Pixels per chunk for ``batch`` images of ``inner = heads * dim_head`` channels."""
    return max(MIN_CHUNK_PIXELS, CHUNK_ELEMENTS // (batch * inner))


def use_chunked_kernel(x: torch.Tensor, chunk: int) -> bool:
    """Whether the chunked kernel applies to ``x`` ``[B, C, H, W]``.

    It is an inference kernel for CPUs in float32/float64 on images of more than one chunk:
    training (autograd), ``torch.compile`` (which fuses the whole-image formula itself),
    other devices and half precision keep the whole-image formula.
    """
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and x.shape[-2] * x.shape[-1] > chunk
    )


def keys_context(xn: torch.Tensor, w_kv: torch.Tensor, heads: int, chunk: int) -> torch.Tensor:
    """``C = softmax_N(k) v^T`` per head, ``[B, heads, d, d]``, from ``xn`` ``[B, C_in, N]``.

    ``w_kv`` ``[2 * heads * d, C_in]`` projects the keys and values. Each chunk ``j`` gives
    its row maxima ``m_j``, ``e_j = exp(k_j - m_j)``, ``s_j = sum e_j`` and ``P_j = e_j v_j^T``;
    with ``m = max_j m_j`` the context is ``sum_j e^(m_j - m) P_j / sum_j e^(m_j - m) s_j``
    (accumulated with the running maximum).
    """
    batch = xn.shape[0]
    context = total = peak = None
    for start in range(0, xn.shape[-1], chunk):
        kv = torch.matmul(w_kv, xn[:, :, start : start + chunk])
        k, v = kv.reshape(batch, 2, heads, -1, kv.shape[-1]).unbind(dim=1)
        row_max = k.amax(dim=-1, keepdim=True)
        e = (k - row_max).exp_()
        part, part_sum = torch.matmul(e, v.transpose(-1, -2)), e.sum(dim=-1, keepdim=True)
        if context is None:
            context, total, peak = part, part_sum, row_max
            continue
        new_peak = torch.maximum(peak, row_max)
        old_scale, part_scale = (peak - new_peak).exp_(), (row_max - new_peak).exp_()
        context = context * old_scale + part * part_scale
        total = total * old_scale + part_sum * part_scale
        peak = new_peak
    return context / total


def linear_attention_chunked(
    xn: torch.Tensor,
    w_qkv: torch.Tensor,
    w_out: torch.Tensor,
    b_out: torch.Tensor,
    heads: int,
    chunk: int,
) -> torch.Tensor:
    """``W_out (c C^T softmax_d(q)) + b_out`` for normalised input ``xn`` ``[B, C_in, H, W]``.

    ``w_qkv`` ``[3 * heads * d, C_in]`` and ``w_out`` ``[C_out, heads * d]`` are the 1x1
    projections' weights; the result is ``[B, C_out, H, W]``, equal to the whole-image
    formula up to float rounding.
    """
    batch, channels, height, width = xn.shape
    n = height * width
    inner = w_qkv.shape[0] // 3
    dim_head = inner // heads
    flat = xn.reshape(batch, channels, n)
    context = keys_context(flat, w_qkv[inner:], heads, chunk) * (dim_head**-0.5 / n)
    # M[b, c, h, i] = sum_j W_out[c, h, j] C[b, h, i, j]: context and projection in one map.
    mapping = torch.einsum("chj,bhij->bchi", w_out.reshape(-1, heads, dim_head), context)
    mapping = mapping.reshape(batch, -1, inner)
    out = xn.new_empty(batch, mapping.shape[1], n)
    bias = b_out[None, :, None]
    for start in range(0, n, chunk):
        q = torch.matmul(w_qkv[:inner], flat[:, :, start : start + chunk])
        q = q.reshape(batch, heads, dim_head, -1).softmax(dim=-2).reshape(batch, inner, -1)
        torch.baddbmm(bias, mapping, q, out=out[:, :, start : start + chunk])
    return out.reshape(batch, -1, height, width)
