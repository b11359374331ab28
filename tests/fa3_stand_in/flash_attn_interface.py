"""A stand-in for FlashAttention-3's `flash_attn_interface`, so that the FA3 branch of train_gpt.py
runs on machines without it (CPUs). It keeps the contract of `flash_attn_func` as train_gpt.py calls
it and computes with PyTorch SDPA: q (B, T, H, D), k and v (B, T, Hkv, D) with H a multiple of Hkv
(grouped KV heads), bf16 or fp16 only, `causal`. FA3 releases return either the output alone or
(out, softmax_lse); FA3_STAND_IN_RETURNS=tuple selects the latter. Every call's `causal` is
appended to CALLS."""
import math
import os

import torch
import torch.nn.functional as F

CALLS = []


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, **unused):
    if not (q.dtype == k.dtype == v.dtype and q.dtype in (torch.bfloat16, torch.float16)):
        raise RuntimeError("FlashAttention only supports fp16 and bf16 inputs")
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4 or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3] \
            or q.shape[2] % k.shape[2]:
        raise RuntimeError("expected q (B, T, H, D) and k, v (B, T, Hkv, D) with H a multiple of Hkv")
    CALLS.append(causal)
    group = q.shape[2] // k.shape[2]
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k.repeat_interleave(group, 2), v.repeat_interleave(group, 2)))
    scale = softmax_scale if softmax_scale is not None else 1 / math.sqrt(q.shape[3])
    out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal, scale=scale).transpose(1, 2)
    if os.environ.get("FA3_STAND_IN_RETURNS") != "tuple":
        return out
    scores = (qh.float() @ kh.float().transpose(-1, -2)) * scale
    if causal:
        scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), -math.inf)
    return out, scores.logsumexp(-1)  # (B, H, T), as FA3's softmax_lse
