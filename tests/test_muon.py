"""Muon (recipe §5): Nesterov momentum, Newton-Schulz orthogonalisation, shape scaling, decoupled weight
decay; one orthogonalisation per matrix across ranks with shared updates; the optimiser groups."""
import math

import pytest
import torch
import torch.distributed as dist
from torch import nn

import train_gpt as tg
from conftest import ONE, spawn_gloo, tiny_args

# several shapes, more than one matrix for most, rows > cols and rows < cols
SHAPES = [(8, 16), (16, 8), (8, 16), (12, 12), (20, 6), (16, 8), (8, 16), (20, 6), (5, 9)]
LR, MOMENTUM, WD, STEPS = 0.05, 0.9, 0.04, 3


def make_params():
    g = torch.Generator().manual_seed(0)
    return [nn.Parameter(torch.randn(shape, generator=g) * 0.1) for shape in SHAPES]


def grads_for(step, rank=0, world_size=1):
    """The gradients of a step, as this rank's part: multiples of 1/1024 small enough that their sums
    over ranks are exact in any order, so that every world size sums to the same gradients."""
    g = torch.Generator().manual_seed(100 + step)
    full = [torch.randint(-2048, 2048, shape, generator=g) for shape in SHAPES]
    parts = [torch.randint(-512, 512, (world_size - 1, *shape), generator=g) for shape in SHAPES]
    mine = [f - part.sum(0) if rank == 0 else part[rank - 1] for f, part in zip(full, parts)]
    return [m.float() / 1024 for m in mine]


def run_muon(steps=STEPS, rank=0, world_size=1):
    params = make_params()
    opt = tg.Muon(params, LR, MOMENTUM, 5, WD)
    for step in range(steps):
        for p, grad in zip(params, grads_for(step, rank, world_size)):
            p.grad = grad.clone()
        opt.step()
    return [p.detach().clone() for p in params], sorted(SHAPES.index(tuple(p.shape)) for p in opt.state)


def _counted_muon(rank, world_size):
    """run_muon() on one rank, the shapes of the matrices this rank orthogonalised, and the
    collectives it called."""
    orthogonalised, calls = [], []
    newton_schulz5, reduce_scatter, all_gather = tg.newton_schulz5, tg.reduce_scatter, tg.all_gather

    def counting(g, steps, *args, **kwargs):
        orthogonalised.append(tuple(g.shape))
        return newton_schulz5(g, steps, *args, **kwargs)

    # in this child process only
    tg.newton_schulz5 = counting
    tg.reduce_scatter = lambda *a, **k: calls.append("reduce_scatter") or reduce_scatter(*a, **k)
    tg.all_gather = lambda *a, **k: calls.append("all_gather") or all_gather(*a, **k)
    params, _ = run_muon(rank=rank, world_size=world_size)
    return params, orthogonalised, calls


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_sum_their_gradients_and_match_one_process_bitwise(world_size):
    """Each rank holds its part of every gradient; the ranks' parts sum to the one-process gradients.
    Every rank ends with the one-process weights bit for bit, each matrix orthogonalised by one rank."""
    assert not dist.is_initialized()
    run_muon(steps=1)  # the first optimizer step imports torch._dynamo: do it once, before forking
    results = spawn_gloo(_counted_muon, world_size)
    single, _ = run_muon()
    initial = make_params()
    counts = [sum(shape[0] if len(shape) == 3 else 1 for shape in ortho) for _, ortho, _ in results]
    assert sum(counts) == STEPS * len(SHAPES), counts  # each matrix once per step, by one rank
    assert all(c > 0 for c in counts), counts  # the work is split
    for rank, (ranked, _, calls) in enumerate(results):
        assert calls == ["reduce_scatter", "all_gather"] * STEPS, calls  # one of each per step, nothing else
        for i, (a, b, p0) in enumerate(zip(ranked, single, initial)):
            assert not torch.equal(a, p0.detach())  # every matrix was updated on every rank
            assert torch.equal(a, b), f"rank {rank} param {i} {tuple(a.shape)}: max diff {(a - b).abs().max()}"


def _momentum_owners(rank, world_size):
    params = make_params()
    opt = tg.Muon(params, LR, MOMENTUM, 5, WD)
    for p, grad in zip(params, grads_for(0, rank, world_size)):
        p.grad = grad
    opt.step()
    return sorted(i for i, p in enumerate(params) if p in opt.state), opt.shares


def test_each_rank_keeps_momentum_for_its_own_share_only():
    results = spawn_gloo(_momentum_owners, 3)
    shares = results[0][1]
    assert all(r[1] == shares for r in results)  # every rank deals the same way
    assert [owned for owned, _ in results] == shares
    assert sorted(i for share in shares for i in share) == list(range(len(SHAPES)))


def test_deal_out_gives_every_matrix_once_and_even_shares():
    """Largest first to the least-loaded rank: the shares differ by at most the largest matrix, which
    bounds the reduce-scatter's padding."""
    sizes = [786_432] * 22 + [262_144] * 22 + [131_072] * 22 + [65_536, 32_768]  # the record's matrices
    for world_size in (1, 2, 3, 8):
        shares = tg.deal_out(sizes, world_size)
        assert sorted(i for share in shares for i in share) == list(range(len(sizes)))
        loads = [sum(sizes[i] for i in share) for share in shares]
        assert max(loads) - min(loads) <= max(sizes)
        assert max(loads) * world_size <= 1.02 * sum(sizes), (world_size, loads)  # under 2 % of padding
    assert tg.deal_out([5, 9, 7], 2) == [[1], [0, 2]]
    assert tg.deal_out([1, 2], 4) == [[1], [0], [], []]  # more ranks than matrices: some hold none


def test_a_missing_gradient_counts_as_zeros():
    params, twins = make_params(), make_params()
    opt, twin_opt = tg.Muon(params, LR, MOMENTUM, 5, WD), tg.Muon(twins, LR, MOMENTUM, 5, WD)
    for step in range(2):
        for i, (p, t, grad) in enumerate(zip(params, twins, grads_for(step))):
            p.grad = None if step == 1 and i == 0 else grad.clone()
            t.grad = torch.zeros_like(grad) if step == 1 and i == 0 else grad.clone()
        opt.step(), twin_opt.step()
    for p, t in zip(params, twins):
        assert torch.equal(p, t)
    assert not torch.equal(params[0], make_params()[0])


# ----------------------------------------------------------------------------- reference

def reference_newton_schulz(d, steps=5):
    a, b, c = 3.4445, -4.7750, 2.0315
    x = d.float() / (torch.linalg.matrix_norm(d.float(), ord="fro") + 1e-7)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        A = x @ x.T
        B = b * A + c * (A @ A)
        x = a * x + B @ x
    return x.T if tall else x


def test_single_process_matches_reference():
    params = make_params()
    opt = tg.Muon(params, LR, MOMENTUM, 5, WD)
    ref = [p.detach().clone() for p in params]
    bufs = [torch.zeros(s) for s in SHAPES]
    for step in range(STEPS):
        grads = grads_for(step)
        for p, grad in zip(params, grads):
            p.grad = grad.clone()
        opt.step()
        for i, grad in enumerate(grads):
            bufs[i] = MOMENTUM * bufs[i] + grad
            direction = grad + MOMENTUM * bufs[i]
            rows, cols = SHAPES[i]
            update = reference_newton_schulz(direction) * math.sqrt(max(1.0, rows / cols))
            ref[i] = ref[i] * (1 - LR * WD) - LR * update
        for i, p in enumerate(params):
            torch.testing.assert_close(p.detach(), ref[i], rtol=0, atol=1e-6, msg=f"step {step} param {i}")
            torch.testing.assert_close(opt.state[p]["momentum_buffer"], bufs[i], rtol=0, atol=1e-6)


def test_newton_schulz_orthogonalises_and_is_scale_free():
    g = torch.Generator().manual_seed(1)
    for shape in [(8, 16), (16, 8), (12, 12)]:
        d = torch.randn(shape, generator=g)
        out = tg.newton_schulz5(d, 5)
        assert out.dtype == torch.float32  # fp32 on CPU
        torch.testing.assert_close(out, reference_newton_schulz(d), rtol=0, atol=1e-6)
        torch.testing.assert_close(tg.newton_schulz5(123.0 * d, 5), out, rtol=0, atol=1e-5)
        # singular values are pushed towards ~1 (the quintic lands in roughly [0.7, 1.2])
        sv = torch.linalg.svdvals(out)
        assert sv.min() > 0.5 and sv.max() < 1.3, sv


def test_update_scale_and_weight_decay_single_step():
    """One step from zero momentum: p <- p (1 - lr wd) - lr (1 + mu) NS(g) sqrt(max(1, rows/cols)),
    with NS scale-free so (1 + mu) drops out."""
    for shape in [(20, 5), (5, 20)]:
        p = nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(2)))
        p0 = p.detach().clone()
        grad = torch.randn(shape, generator=torch.Generator().manual_seed(3))
        p.grad = grad
        opt = tg.Muon([p], 0.1, 0.5, 5, 0.2)
        opt.step()
        expected = p0 * (1 - 0.1 * 0.2) - 0.1 * reference_newton_schulz(grad) * math.sqrt(max(1, shape[0] / shape[1]))
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)
    # a zero gradient orthogonalises to zero: only the decoupled decay p <- p (1 - lr wd) acts
    p = nn.Parameter(torch.ones(4, 4))
    p.grad = torch.zeros(4, 4)
    tg.Muon([p], 0.5, 0.9, 5, 0.1).step()
    torch.testing.assert_close(p.detach(), torch.full((4, 4), 1 - 0.05), rtol=0, atol=1e-7)


# ----------------------------------------------------------------------------- parameter groups

def test_build_optimizers_groups():
    args = tiny_args(vocab_size=64, bigram_vocab_size=64, train_seq_len=16, eval_seq_len=16, train_batch_tokens=128,
                     matrix_lr=0.011, tied_embed_lr=0.022, scalar_lr=0.033, muon_wd=0.05, adam_wd=0.06)
    model = tg.build_model(args)
    muon, adam = tg.build_optimizers(model, args, ONE)
    assert isinstance(muon, tg.Muon) and isinstance(adam, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}

    assert len(muon.param_groups) == 1
    muon_group = muon.param_groups[0]
    assert muon_group["lr"] == muon_group["base_lr"] == 0.011 and muon_group["weight_decay"] == 0.05
    assert muon_group["momentum"] == args.muon_momentum_warmup_start
    linear = {id(m.weight) for m in model.modules() if isinstance(m, tg.CastedLinear)}
    assert {id(p) for p in muon_group["params"]} == linear
    muon_names = {names[id(p)] for p in muon_group["params"]}
    assert {"bigram.proj.weight", "ve_shared.proj.weight", "blocks.0.attn.c_q.weight", "blocks.3.mlp.proj.weight"} <= muon_names
    assert all(p.ndim == 2 for p in muon_group["params"])

    assert len(adam.param_groups) == 2
    tables, scalars = adam.param_groups
    assert {names[id(p)] for p in tables["params"]} == {"tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight"}
    assert tables["lr"] == tables["base_lr"] == 0.022
    assert scalars["lr"] == scalars["base_lr"] == 0.033
    for group in adam.param_groups:
        assert group["betas"] == (0.9, 0.95) and group["eps"] == 1e-8 and group["weight_decay"] == 0.06
    scalar_names = {names[id(p)] for p in scalars["params"]}
    expected = {"skip_weights", "smear.gate", "bigram.scale", "ve_shared.scale", "ve_layer_scales.0", "ve_layer_scales.1"}
    for i in range(4):
        expected |= {f"blocks.{i}.{n}" for n in ("attn_scale", "mlp_scale", "resid_mix", "attn.q_gain")}
    assert scalar_names == expected

    everything = [id(p) for opt in (muon, adam) for g in opt.param_groups for p in g["params"]]
    assert len(everything) == len(set(everything)) == len(list(model.parameters()))
    assert set(everything) == {id(p) for p in model.parameters()}

    tg.set_lr_scale([muon, adam], 0.5)
    assert muon.param_groups[0]["lr"] == pytest.approx(0.0055)
    assert [g["lr"] for g in adam.param_groups] == pytest.approx([0.011, 0.0165])
