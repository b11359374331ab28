"""The model (recipe §4): the record's state-dict layout and size, its initialisation, and every
component against reference computations written here from the formulas of docs/recipe.md."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import CPU, ONE, make_args, tiny_args
from train_gpt import (GPT, MLP, ProjectedEmbedding, SmearGate, apply_rotary, bigram_hash, build_model, causal_attention,
                       place_model, remove_value_direction, rotary)

REFERENCE_STATE_DICT = Path(__file__).resolve().parent / "data" / "state_dict_default.json"
F64 = torch.float64


@torch.no_grad()
def perturbed(model: GPT, seed: int = 0, scale: float = 0.2) -> GPT:
    """A 'trained-ish' model: every parameter moved away from its (often zero or one) init."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


@pytest.fixture(scope="module")
def default_model():
    args = make_args()
    return args, build_model(args)


# ----------------------------------------------------------------------------- references (from docs/recipe.md)

def ref_rms(x):
    x = x.to(F64)
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)


def ref_rope_base(seq_len, base, rope_dims):
    return base * (seq_len / 1024) ** (rope_dims / (rope_dims - 2)) if seq_len > 1024 else base


def ref_rope(x, base, rope_dims):
    """x (B, T, H, D): rotate (x[j], x[j+half]) for j < half by position * base^(-2j/rope_dims)."""
    x = x.to(F64)
    out, half = x.clone(), rope_dims // 2
    pos = torch.arange(x.shape[1], dtype=F64)
    for j in range(half):
        theta = pos * base ** (-2 * j / rope_dims)
        c, s = torch.cos(theta)[None, :, None], torch.sin(theta)[None, :, None]
        a, b = x[..., j], x[..., j + half]
        out[..., j] = a * c + b * s
        out[..., j + half] = b * c - a * s
    return out


def ref_attention(q, k, v):
    """Naive causal softmax(Q K^T / sqrt(D)) V, KV head h // (H / Hkv) for query head h."""
    q, k, v = q.to(F64), k.to(F64), v.to(F64)
    B, T, H, D = q.shape
    rep = H // k.shape[2]
    k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D)
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    return torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v)


def ref_xsa(y, v):
    y, v = y.to(F64), v.to(F64)
    H, Hkv = y.shape[2], v.shape[2]
    out = y.clone()
    for h in range(H):
        vhat = v[:, :, h // (H // Hkv)]
        vhat = vhat / vhat.norm(dim=-1, keepdim=True)
        out[:, :, h] = y[:, :, h] - (y[:, :, h] * vhat).sum(-1, keepdim=True) * vhat
    return out


def ref_self_attention(attn, x, ve, *, heads, kv_heads, rope_dims, base, xsa):
    B, T, dim = x.shape
    D = dim // heads
    W = lambda lin: lin.weight.detach().to(F64)
    x = x.to(F64)
    q = ref_rms((x @ W(attn.c_q).T).view(B, T, heads, D))
    k = ref_rms((x @ W(attn.c_k).T).view(B, T, kv_heads, D))
    v = x @ W(attn.c_v).T
    if ve is not None:
        v = v + ve.to(F64)
    v = v.view(B, T, kv_heads, D)
    b = ref_rope_base(T, base, rope_dims)
    q = ref_rope(q, b, rope_dims) * attn.q_gain.detach().to(F64)[None, None, :, None]
    k = ref_rope(k, b, rope_dims)
    y = ref_attention(q, k, v)
    if xsa:
        y = ref_xsa(y, v)
    return y.reshape(B, T, dim) @ W(attn.proj).T


def ref_bigram_hash(ids, table):
    def wrap32(v):
        return (v + 2**31) % 2**32 - 2**31
    out = []
    for row in ids.tolist():
        hashed = [table - 1]
        for i in range(1, len(row)):
            hashed.append((wrap32(36313 * row[i]) ^ wrap32(27191 * row[i - 1])) % (table - 1))
        out.append(hashed)
    return torch.tensor(out)


def ref_smear(x, gate):
    g = torch.sigmoid(gate.detach().to(F64))
    x = x.to(F64)
    prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
    return (1 - g) * x + g * prev


@torch.no_grad()
def ref_forward_logits(model, args, ids):
    """The GPT forward of recipe §4 composed from the model's own blocks (tested on their own below)."""
    emb = model.tok_emb.weight.to(F64)[ids]
    h = ref_bigram_hash(ids, args.bigram_vocab_size)
    big = (model.bigram.embed.weight.to(F64)[h] @ model.bigram.proj.weight.to(F64).T) * model.bigram.scale.to(F64)
    x = ref_smear(ref_rms(emb + big), model.smear.gate).float()
    x0, stack = x, []
    n_enc = args.num_layers // 2
    ve = None
    if args.ve_enabled:
        ve = (model.ve_shared.embed.weight[ids] @ model.ve_shared.proj.weight.T) * model.ve_shared.scale
    for i, block in enumerate(model.blocks):
        if i >= n_enc and stack:
            x = x + model.skip_weights[i - n_enc] * stack.pop()
        block_ve = ve * model.ve_layer_scales[args.ve_layers.index(i)] if i in args.ve_layers and ve is not None else None
        x = block(x, x0, block_ve, rotary(ids.size(1), args.rope_dims, args.rope_base, CPU))
        if i < n_enc:
            stack.append(x)
    logits = ref_rms(x) @ model.tok_emb.weight.to(F64).T
    return args.logit_softcap * torch.tanh(logits / args.logit_softcap)


# ----------------------------------------------------------------------------- the default model

def test_default_state_dict_layout(default_model):
    _, model = default_model
    reference = json.loads(REFERENCE_STATE_DICT.read_text())
    got = [(name, list(t.shape)) for name, t in model.state_dict().items()]
    assert got == [(name, shape) for name, shape in reference.items()]


def test_default_parameter_count_dtype_device(default_model):
    _, model = default_model
    assert sum(p.numel() for p in model.parameters()) == 27_124_828
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.device.type == "cpu", name
    assert model.skip_weights.shape == (5, 512)  # 11 layers: 5 encoder, 6 decoder blocks


def test_default_initial_loss_is_uniform(default_model):
    _, model = default_model
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1024, (1, 16), generator=g)
    targets = torch.randint(0, 1024, (1, 16), generator=g)
    with torch.no_grad():
        logits = model.forward_logits(ids)
        loss = model(ids, targets)
    assert logits.shape == (1, 16, 1024) and logits.dtype == torch.float32
    assert abs(loss.item() - math.log(1024)) < 0.1


def assert_orthogonal(w, gain=1.0, atol=2e-4):
    w = w.detach().to(F64)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    assert torch.allclose(gram, gain**2 * torch.eye(gram.shape[0], dtype=F64), atol=atol)


def test_default_init_embeddings(default_model):
    _, model = default_model
    tok = model.tok_emb.weight.detach()
    assert abs(tok.std().item() - 0.005) < 1e-4 and abs(tok.mean().item()) < 1e-4
    ve = model.ve_shared.embed.weight.detach()
    assert ve.shape == (1024, 128)
    assert abs(ve.std().item() - 0.01) < 3e-4 and abs(ve.mean().item()) < 3e-4


def test_default_init_linear_weights(default_model):
    _, model = default_model
    for i, block in enumerate(model.blocks):
        assert not block.attn.proj.weight.any(), i
        assert not block.mlp.proj.weight.any(), i
        for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.fc):
            assert_orthogonal(lin.weight)
            assert lin.weight.std() > 0.01  # not zero
    for proj in (model.bigram.proj, model.ve_shared.proj):
        sv = torch.linalg.svdvals(proj.weight.detach().to(F64))
        assert torch.allclose(sv, torch.full_like(sv, 1 / math.sqrt(22)), rtol=1e-4), sv[:4]


def test_default_init_control_parameters(default_model):
    _, model = default_model
    assert model.bigram.scale.item() == pytest.approx(0.05)
    assert model.ve_shared.scale.item() == pytest.approx(0.1)
    assert torch.equal(model.skip_weights.detach(), torch.ones(5, 512))
    assert torch.equal(model.smear.gate.detach(), torch.zeros(512))
    assert [p.item() for p in model.ve_layer_scales] == [1.0, 1.0]
    for block in model.blocks:
        assert torch.equal(block.attn.q_gain.detach(), torch.full((8,), 1.5))
        assert torch.equal(block.resid_mix.detach(), torch.stack([torch.ones(512), torch.zeros(512)]))
        assert torch.equal(block.attn_scale.detach(), torch.ones(512))
        assert torch.equal(block.mlp_scale.detach(), torch.ones(512))


# ----------------------------------------------------------------------------- determinism

def test_build_model_deterministic_per_seed():
    a = build_model(tiny_args(seed="5")).state_dict()
    b = build_model(tiny_args(seed="5")).state_dict()
    c = build_model(tiny_args(seed="6")).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["tok_emb.weight"], c["tok_emb.weight"])
    assert not torch.equal(a["blocks.0.attn.c_q.weight"], c["blocks.0.attn.c_q.weight"])


def test_build_model_ignores_global_rng_state():
    torch.manual_seed(1)
    a = build_model(tiny_args()).state_dict()
    torch.manual_seed(2)
    b = build_model(tiny_args()).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- components

@pytest.mark.parametrize("vocab,table", [(1024, 3072), (65536, 3072), (512, 256)])
def test_bigram_hash(vocab, table):
    g = torch.Generator().manual_seed(vocab)
    ids = torch.randint(0, vocab, (3, 40), generator=g)
    ids[0, :4] = torch.tensor([vocab - 1, vocab - 1, 0, vocab - 1])
    got = bigram_hash(ids, table)
    assert got.shape == ids.shape
    assert torch.equal(got.long(), ref_bigram_hash(ids, table))
    assert (got[:, 0] == table - 1).all() and (got[:, 1:] < table - 1).all() and (got >= 0).all()


def test_bigram_module():
    torch.manual_seed(0)
    mod = ProjectedEmbedding(64, 8, 16, 0.05)
    with torch.no_grad():
        mod.embed.weight.normal_()
        mod.proj.weight.normal_()
        mod.scale.fill_(0.3)
    ids = torch.randint(0, 1000, (2, 9))
    h = ref_bigram_hash(ids, 64)
    expected = (mod.embed.weight.detach().to(F64)[h] @ mod.proj.weight.detach().to(F64).T) * 0.3
    assert torch.allclose(mod.eval()(bigram_hash(ids, 64)).to(F64), expected, atol=1e-5)


def test_smear_gate():
    mod = SmearGate(6)
    x = torch.randn(2, 5, 6)
    assert torch.equal(mod(x), x * 0.5 + 0.5 * torch.cat([torch.zeros(2, 1, 6), x[:, :-1]], 1))  # gate 0: g = 1/2
    with torch.no_grad():
        mod.gate.copy_(torch.tensor([-20.0, -1.0, 0.0, 0.5, 2.0, 20.0]))
    out = mod(x)
    assert torch.allclose(out.to(F64), ref_smear(x, mod.gate), atol=1e-6)
    assert torch.allclose(out[:, 0], (1 - torch.sigmoid(mod.gate.detach())) * x[:, 0])  # no previous at position 0
    assert torch.allclose(out[:, 1:, 5], x[:, :-1, 5], atol=1e-6)  # gate ~1: the previous position


@pytest.mark.parametrize("seq_len", [16, 1024, 1025, 2048])  # the NTK-scaled base from 1025 on
def test_rotary_tables(seq_len):
    rope_dims, base = 16, 10000.0
    cos, sin = rotary(seq_len, rope_dims, base, CPU)
    assert cos.shape == sin.shape == (1, seq_len, 1, rope_dims // 2)
    b = ref_rope_base(seq_len, base, rope_dims)
    theta = torch.arange(seq_len, dtype=F64)[:, None] * b ** (-torch.arange(0, rope_dims, 2, dtype=F64) / rope_dims)
    atol = 1e-5 if seq_len <= 16 else 2e-3  # fp32 angles of up to ~2000 rad
    assert torch.allclose(cos[0, :, 0].to(F64), theta.cos(), atol=atol)
    assert torch.allclose(sin[0, :, 0].to(F64), theta.sin(), atol=atol)


@pytest.mark.parametrize("seq_len", [12, 1100])
def test_apply_rotary_convention(seq_len):
    rope_dims, base = 16, 10000.0
    g = torch.Generator().manual_seed(seq_len)
    x = torch.randn(2, seq_len, 3, 64, generator=g)
    cos, sin = rotary(seq_len, rope_dims, base, CPU)
    out = apply_rotary(x, cos, sin)
    expected = ref_rope(x, ref_rope_base(seq_len, base, rope_dims), rope_dims)
    assert torch.allclose(out.to(F64), expected, atol=1e-5 if seq_len < 100 else 5e-3)
    assert torch.equal(out[..., rope_dims:], x[..., rope_dims:])  # the other 48 dims are untouched
    assert torch.equal(out[:, 0], x[:, 0])  # position 0: no rotation
    # the sign convention: for position 1, dim 0 (theta = 1 rad) a' = a cos + b sin
    a, b = x[0, 1, 0, 0].item(), x[0, 1, 0, 8].item()
    assert out[0, 1, 0, 0].item() == pytest.approx(a * math.cos(1) + b * math.sin(1), abs=1e-5)
    assert out[0, 1, 0, 8].item() == pytest.approx(b * math.cos(1) - a * math.sin(1), abs=1e-5)


def test_remove_value_direction():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 5, 4, 8, generator=g)
    v = torch.randn(2, 5, 2, 8, generator=g)
    out = remove_value_direction(y, v)
    assert out.shape == y.shape
    assert torch.allclose(out.to(F64), ref_xsa(y, v), atol=1e-5)
    for h in range(4):
        vhat = F.normalize(v[:, :, h // 2].to(F64), dim=-1)
        assert torch.allclose((out[:, :, h].to(F64) * vhat).sum(-1), torch.zeros(2, 5, dtype=F64), atol=1e-5)
    # heads 0 and 1 read KV head 0: their results are not orthogonal to KV head 1 in general
    assert (out[:, :, 0].to(F64) * F.normalize(v[:, :, 1].to(F64), dim=-1)).sum(-1).abs().max() > 1e-2


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (2, 2), (4, 1)])
def test_causal_attention(heads, kv_heads):
    g = torch.Generator().manual_seed(heads * 10 + kv_heads)
    q = torch.randn(2, 7, heads, 16, generator=g)
    k = torch.randn(2, 7, kv_heads, 16, generator=g)
    v = torch.randn(2, 7, kv_heads, 16, generator=g)
    out = causal_attention(q, k, v)
    assert out.shape == q.shape
    assert torch.allclose(out.to(F64), ref_attention(q, k, v), atol=1e-5)


def test_mlp_leaky_relu_squared():
    torch.manual_seed(0)
    mlp = MLP(8, 24).eval()
    with torch.no_grad():
        mlp.fc.weight.normal_()
        mlp.proj.weight.normal_()
    x = torch.randn(3, 5, 8)
    h = x.to(F64) @ mlp.fc.weight.detach().to(F64).T
    act = torch.where(h > 0, h, 0.5 * h) ** 2
    expected = act @ mlp.proj.weight.detach().to(F64).T
    assert torch.allclose(mlp(x).to(F64), expected, atol=1e-4)


@pytest.mark.parametrize("seq_len", [12, 1100])
def test_attention_module_against_reference(seq_len):
    """Each block's attention: q/k RMS-normed per head, partial RoPE (NTK base past 1024), q_gain,
    GQA, value embedding added to v, XSA exactly in the last XSA_LAST_N blocks."""
    args = tiny_args()
    model = perturbed(build_model(args), seed=1)
    g = torch.Generator().manual_seed(seq_len)
    x = torch.randn(1 if seq_len > 100 else 2, seq_len, 32, generator=g)
    ve = torch.randn(x.shape[0], seq_len, 16, generator=g)
    kw = dict(heads=2, kv_heads=1, rope_dims=8, base=10000.0)
    atol = 1e-4 if seq_len < 100 else 2e-3
    for i, block in enumerate(model.blocks):
        with torch.no_grad():
            out = block.attn(x, ve, rotary(seq_len, 8, 10000.0, CPU)).to(F64)
        xsa = i >= 4 - 2
        assert torch.allclose(out, ref_self_attention(block.attn, x, ve, xsa=xsa, **kw), atol=atol), i
        assert not torch.allclose(out, ref_self_attention(block.attn, x, ve, xsa=not xsa, **kw), atol=atol), i
        assert not torch.allclose(out, ref_self_attention(block.attn, x, None, xsa=xsa, **kw), atol=atol), i


@pytest.mark.parametrize("ln_scale", ["1", "0"])
def test_block_against_reference(ln_scale):
    args = tiny_args(ln_scale=ln_scale)
    model = perturbed(build_model(args), seed=2)
    g = torch.Generator().manual_seed(0)
    x, x0 = torch.randn(2, 6, 32, generator=g), torch.randn(2, 6, 32, generator=g)
    for i in (0, 3):
        block = model.blocks[i]
        seen = {}
        hooks = [block.attn.register_forward_hook(lambda m, a, o: seen.update(attn_in=a[0], attn_ve=a[1], attn_out=o)),
                 block.mlp.register_forward_hook(lambda m, a, o: seen.update(mlp_in=a[0], mlp_out=o))]
        with torch.no_grad():
            out = block(x, x0, None, rotary(6, args.rope_dims, args.rope_base, CPU)).to(F64)
        for h in hooks:
            h.remove()
        f = 1 / math.sqrt(i + 1) if ln_scale == "1" else 1.0
        mix = block.resid_mix.detach().to(F64)
        x_in = mix[0] * x.to(F64) + mix[1] * x0.to(F64)
        assert torch.allclose(seen["attn_in"].to(F64), ref_rms(x_in) * f, atol=1e-5)
        assert seen["attn_ve"] is None
        mid = x_in + block.attn_scale.detach().to(F64) * seen["attn_out"].to(F64)
        assert torch.allclose(seen["mlp_in"].to(F64), ref_rms(mid) * f, atol=1e-5)
        assert torch.allclose(out, mid + block.mlp_scale.detach().to(F64) * seen["mlp_out"].to(F64), atol=1e-5)


# ----------------------------------------------------------------------------- the whole GPT

@pytest.mark.parametrize("overrides", [{}, dict(num_layers="5", ve_layers="3,4"), dict(num_layers="5", ve_layers="0,2,4"),
                                       dict(ve_enabled="0")])
def test_gpt_forward_against_reference(overrides):
    args = tiny_args(**overrides)
    model = perturbed(build_model(args), seed=3)
    ids = torch.randint(0, 512, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model.forward_logits(ids)
    assert got.shape == (2, 20, 512) and got.dtype == torch.float32
    assert torch.allclose(got.to(F64), ref_forward_logits(model, args, ids), atol=1e-4)
    if not args.ve_enabled:
        assert not any(name.startswith(("ve_shared", "ve_layer_scales")) for name in model.state_dict())


def test_causality():
    model = perturbed(build_model(tiny_args()), seed=4)
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[:, 10] = (changed[:, 10] + 7) % 512
    with torch.no_grad():
        a, b = model.forward_logits(ids), model.forward_logits(changed)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert (a[:, 10] - b[:, 10]).abs().max() > 1e-3
    assert (a[:, 11:] - b[:, 11:]).abs().amax(dim=-1).min() > 0  # later positions see it


def test_forward_is_cross_entropy_of_logits():
    model = perturbed(build_model(tiny_args()), seed=5)
    g = torch.Generator().manual_seed(3)
    ids, targets = torch.randint(0, 512, (3, 16), generator=g), torch.randint(0, 512, (3, 16), generator=g)
    with torch.no_grad():
        loss = model(ids, targets)
        logits = model.forward_logits(ids).to(F64)
    expected = -logits.log_softmax(-1).gather(-1, targets[..., None]).mean()
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_logit_softcap():
    args = tiny_args()
    model = perturbed(build_model(args), seed=6)
    with torch.no_grad():
        model.tok_emb.weight.mul_(100)
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(4))
    seen = {}
    model.blocks[-1].register_forward_hook(lambda m, a, o: seen.update(x=o))
    with torch.no_grad():
        logits = model.forward_logits(ids)
    raw = ref_rms(seen["x"]) @ model.tok_emb.weight.detach().to(F64).T
    assert raw.abs().max() > 100  # the cap matters here
    assert logits.abs().max() <= 30 and logits.abs().max() > 29
    assert torch.allclose(logits.to(F64), 30 * torch.tanh(raw / 30), atol=1e-3)


def test_unet_skips():
    """5 layers: 2 encoder blocks, 3 decoder blocks; decoder block k adds skip_weights[k] x the last
    pushed encoder output; the last decoder block (empty stack) gets nothing."""
    args = tiny_args(num_layers="5", ve_layers="3,4")
    model = perturbed(build_model(args), seed=7)
    assert model.skip_weights.shape == (2, 32)
    ins, outs = {}, {}

    def record(i):
        def hook(module, inputs, output):
            ins[i], outs[i] = inputs[0], output
        return hook

    for i, block in enumerate(model.blocks):
        block.register_forward_hook(record(i))
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        base = model.forward_logits(ids)
    sw = model.skip_weights.detach()
    assert torch.allclose(ins[1], outs[0])
    assert torch.allclose(ins[2], outs[1] + sw[0] * outs[1], atol=1e-6)
    assert torch.allclose(ins[3], outs[2] + sw[1] * outs[0], atol=1e-6)
    assert torch.equal(ins[4], outs[3])  # no skip for the last decoder block
    with torch.no_grad():
        model.skip_weights.zero_()
        assert (model.forward_logits(ids) - base).abs().max() > 1e-3


def test_skip_weight_rows_follow_encoder_count():
    assert build_model(tiny_args()).skip_weights.shape == (2, 32)
    assert build_model(tiny_args(num_layers="3", ve_layers="1,2", xsa_last_n="1")).skip_weights.shape == (1, 32)
    assert build_model(tiny_args(num_layers="7", ve_layers="5,6")).skip_weights.shape == (3, 32)


def test_value_embeddings_only_in_ve_layers():
    args = tiny_args()  # VE_LAYERS 2,3
    model = perturbed(build_model(args), seed=8)
    seen = {}
    for i, block in enumerate(model.blocks):
        block.attn.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, a[1]))
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        base = model.forward_logits(ids)
        ve = (model.ve_shared.embed.weight[ids] @ model.ve_shared.proj.weight.T) * model.ve_shared.scale
    assert seen[0] is None and seen[1] is None
    assert torch.allclose(seen[2], ve * model.ve_layer_scales[0], atol=1e-6)
    assert torch.allclose(seen[3], ve * model.ve_layer_scales[1], atol=1e-6)
    with torch.no_grad():
        model.ve_shared.embed.weight.add_(1.0)
        moved = model.forward_logits(ids)
        assert (moved - base).abs().max() > 1e-3  # ve_shared matters with non-zero layer scales
        for p in model.ve_layer_scales:
            p.zero_()
        off = model.forward_logits(ids)
        model.ve_shared.embed.weight.normal_()
        model.ve_shared.proj.weight.normal_()
        assert torch.allclose(model.forward_logits(ids), off, atol=1e-6)  # now independent of ve_shared


def test_place_model_on_cpu_keeps_fp32():
    model = build_model(tiny_args())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    placed = place_model(model, ONE)
    for name, p in placed.named_parameters():
        assert p.dtype == torch.float32 and p.device.type == "cpu", name
    after = placed.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert placed.forward_logits(torch.zeros(1, 4, dtype=torch.long)).dtype == torch.float32

