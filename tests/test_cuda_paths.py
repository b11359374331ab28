"""The branches a CUDA run takes, run on the CPU: bf16 embedding tables, bf16 autocast and bf16
Newton-Schulz (a Runtime with bf16=True, which setup_runtime sets on CUDA), fused AdamW, and the
inductor-compiled model and Newton-Schulz in a training step over 2 gloo ranks. (FlashAttention-3
through its stand-in: test_attention.py; the QAT switches under inductor: test_qat.py.)

Checked against broken code, one break at a time: place_model ignoring bf16, or Runtime.autocast
returning a null context, fails the first test; Newton-Schulz computing in fp32 whatever it is
asked fails the second; AdamW without fused=True fails the third; compiles() false for COMPILE=1
fails the compiled test."""
import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

import train_gpt as tg
from conftest import CPU, ONE, apply_env, filled_model, one, run_lines, spawn_gloo, tiny_args

BF16 = tg.Runtime(0, 1, CPU, bf16=True)
TABLES = {"tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight"}


def tiny_batches(args, rt, seed=0):
    ids = torch.randint(0, args.vocab_size, (rt.grad_accum_steps, 1, args.train_seq_len + 1),
                        generator=torch.Generator().manual_seed(seed + rt.rank))
    return [(row[:, :-1], row[:, 1:]) for row in ids]


def test_bf16_places_the_tables_in_bf16_and_runs_the_matmuls_in_bf16():
    model = tg.place_model(filled_model(tiny_args()), BF16)
    for name, p in model.named_parameters():
        assert p.dtype == (torch.bfloat16 if name in TABLES else torch.float32), name
    seen = []
    for m in model.modules():
        if isinstance(m, tg.CastedLinear):
            m.register_forward_hook(lambda mod, inputs, out: seen.append(out.dtype))
    ids = torch.randint(0, 512, (2, 33), generator=torch.Generator().manual_seed(1))
    with BF16.autocast():
        loss = model(ids[:, :-1], ids[:, 1:])
    assert seen and set(seen) == {torch.bfloat16}
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    placed = tg.place_model(filled_model(tiny_args()), ONE)  # fp32 where training is not in bf16
    assert all(p.dtype == torch.float32 for p in placed.parameters())
    for m in placed.modules():
        if isinstance(m, tg.CastedLinear):
            m.register_forward_hook(lambda mod, inputs, out: seen.append(out.dtype))
    with ONE.autocast():
        placed(ids[:, :-1], ids[:, 1:])
    assert seen[-1] == torch.float32
    with BF16.autocast():  # the autocast alone turns fp32 weights' matmuls into bf16 ones
        placed(ids[:, :-1], ids[:, 1:])
    assert seen[-1] == torch.bfloat16


def test_bf16_newton_schulz_and_a_bf16_training_step():
    args = tiny_args()
    model = tg.place_model(filled_model(args), BF16)
    optimizers = tg.build_optimizers(model, args, BF16)
    assert optimizers.muon.update_dtype == torch.bfloat16
    assert tg.build_optimizers(filled_model(args), args, ONE).muon.update_dtype == torch.float32
    dtypes = []
    orthogonalise = optimizers.muon.orthogonalise
    optimizers.muon.orthogonalise = lambda g, steps, dtype: dtypes.append(dtype) or orthogonalise(g, steps, dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = tg.train_step(model, tiny_batches(args, BF16), optimizers, args.grad_clip_norm, BF16)
    assert torch.isfinite(loss) and dtypes and set(dtypes) == {torch.bfloat16}
    for name, p in model.named_parameters():
        assert p.dtype == before[name].dtype and torch.isfinite(p.float()).all(), name
        if p.dim() == 2:
            assert not torch.equal(p, before[name]), name  # every matrix and table moved
    g = torch.randn(3, 24, 40, generator=torch.Generator().manual_seed(2))
    low, high = tg.newton_schulz5(g, 5, torch.bfloat16), tg.newton_schulz5(g, 5)
    assert low.dtype == torch.bfloat16 and high.dtype == torch.float32
    assert (low.float() - high).abs().max() < 0.05  # bf16 rounding of the same iteration


def test_adam_is_fused_and_matches_plain_adamw_on_mixed_dtypes():
    """One fused kernel for bf16 tables and fp32 scalars alike; the updates of the for-loop AdamW."""
    args = tiny_args()
    model, reference = (tg.place_model(filled_model(args), BF16) for _ in range(2))
    adam = tg.build_optimizers(model, args, BF16).adam
    assert adam.defaults["fused"] is True
    names, twins = {id(p): n for n, p in model.named_parameters()}, dict(reference.named_parameters())
    plain = torch.optim.AdamW([dict(params=[twins[names[id(p)]] for p in g["params"]], lr=g["lr"]) for g in adam.param_groups],
                              betas=(args.beta1, args.beta2), eps=args.adam_eps, weight_decay=args.adam_wd, foreach=False)
    for step in range(3):
        for group in adam.param_groups:
            for p in group["params"]:
                grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(100 * step + len(names[id(p)])))
                p.grad, twins[names[id(p)]].grad = grad.to(p.dtype), grad.to(p.dtype)
        adam.step(), plain.step()
    for group in adam.param_groups:
        for p in group["params"]:
            twin = twins[names[id(p)]]
            assert p.dtype == twin.dtype and not torch.equal(p, tg.place_model(filled_model(args), BF16).get_parameter(names[id(p)]))
            torch.testing.assert_close(p.float(), twin.float(), atol=1e-2 if p.dtype == torch.bfloat16 else 1e-6, rtol=0,
                                       msg=names[id(p)])


def _compiled_steps(rank, world_size):
    """Three training steps of the tiny model compiled (inductor, fullgraph) with compiled Newton-Schulz
    on this rank; the losses, the weights, and the graphs compiled after the first step."""
    args = tiny_args(compile="1")
    rt = tg.Runtime(rank, world_size, CPU)
    model = tg.compile_model(tg.place_model(filled_model(args), rt), args, CPU)
    optimizers = tg.build_optimizers(model, args, rt)
    losses = [tg.train_step(model, tiny_batches(args, rt), optimizers, args.grad_clip_norm, rt).item()]
    graphs = counters["stats"]["unique_graphs"]
    losses += [tg.train_step(model, tiny_batches(args, rt, seed=s), optimizers, args.grad_clip_norm, rt).item()
               for s in (1, 2)]
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}, counters["stats"]["unique_graphs"] - graphs


def _eager_steps(rank, world_size):
    args = tiny_args()
    rt = tg.Runtime(rank, world_size, CPU)
    model = tg.place_model(filled_model(args), rt)
    optimizers = tg.build_optimizers(model, args, rt)
    losses = [tg.train_step(model, tiny_batches(args, rt, seed=s), optimizers, args.grad_clip_norm, rt).item()
              for s in (0, 1, 2)]
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_compiled_model_and_newton_schulz_train_over_two_gloo_ranks(monkeypatch):
    """The training step as on 8 GPUs: model and Newton-Schulz compiled by inductor with fullgraph, the
    gradients summed by our collectives over 2 ranks. It matches the eager step, and compiles
    nothing after the first step."""
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")  # no compile workers in the forked ranks
    args = tiny_args(compile="1")
    muon = tg.build_optimizers(tg.build_model(args), args, ONE).muon
    assert muon.orthogonalise is not tg.newton_schulz5  # compiled where the model is
    assert tg.build_optimizers(tg.build_model(tiny_args()), tiny_args(), ONE).muon.orthogonalise is tg.newton_schulz5
    compiled, eager = spawn_gloo(_compiled_steps, 2), spawn_gloo(_eager_steps, 2)
    for (losses, weights, recompiled), (eager_losses, eager_weights) in zip(compiled, eager):
        assert recompiled == 0
        assert losses == pytest.approx(eager_losses, abs=1e-4)
        for name, w in weights.items():
            torch.testing.assert_close(w, eager_weights[name], atol=1e-4, rtol=0, msg=name)
    assert torch.equal(compiled[0][1]["blocks.0.attn.c_q.weight"], compiled[1][1]["blocks.0.attn.c_q.weight"])


def test_a_whole_run_in_bf16_on_the_cpu(tiny_env, monkeypatch):
    """main() with the runtime a CUDA machine gets, bf16, on the CPU: training, averaging, artifact
    and the three final evaluations all run and give finite figures."""
    monkeypatch.setattr(tg, "setup_runtime", lambda: BF16)
    apply_env(monkeypatch, dict(tiny_env, ITERATIONS="4", WARMDOWN_ITERS="2"))
    tg.main()
    lines = run_lines("logs/tiny.txt")
    for name in ("final_int6_roundtrip_exact", "final_int6_sliding_window_exact", "final_ttt_exact"):
        bpb = float(one(lines, rf"{name} val_loss:[\d.]+ val_bpb:([\d.]+)")[1])
        assert 0 < bpb < 20
