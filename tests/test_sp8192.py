"""The SP8192 record's options (recipe §12), off by default: a weight-shared loop of blocks with its own U-Net
split (LOOP_LAYERS, LOOP_PASSES, LOOP_START_FRAC), gated skips (SKIP_GATES), GPT-J parallel blocks
(PARALLEL_FORM=gptj), no bigram or smear gate (BIGRAM_ENABLED, SMEAR_ENABLED), RoPE's reference length
(ROPE_REFERENCE_LEN), MuonEq-R (MUON_ROW_NORM), the embedding's own weight decay (EMBED_WD), a warmdown by fraction
of the clock (WARMDOWN_FRAC, MIN_LR), the record's loader (LOADER=shuffled), SDClip scales (GPTQ_SCALES=sdclip) and
GPTQ of the embedding (GPTQ_EMBED); and configs/sp8192.env, the record stated in full."""
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train_gpt as tg
from conftest import (CPU, ONE, REPO, clean_environ, filled_model, load_tool, one, run_and_reread, run_lines, run_script, tiny_args,
                      write_shard)

# The record's model at the tiny size: 4 blocks, blocks 1 and 2 three times (8 passes: 4 encoder, 4 decoder),
# GPT-J from block 3, gated skips, none of the bigram, smear gate and value embeddings.
SP = dict(loop_layers="1,2", loop_passes="3", skip_gates="1", parallel_from="3", parallel_form="gptj", bigram_enabled="0",
          smear_enabled="0", ve_enabled="0", warmup_steps="4", xsa_last_n="4", mlp_mult="4", qk_gain_init="5.25")
SP_ENV = {k.upper(): v for k, v in SP.items()}


def sp_model(seed: int = 1, **overrides) -> tg.GPT:
    model = filled_model(tiny_args(**{**SP, **overrides}), seed=seed)
    g = torch.Generator().manual_seed(seed + 20)
    with torch.no_grad():  # gates and skip weights away from their inits, so that each one matters
        for name in ("skip_gates", "skip_weights"):
            if getattr(model, name) is not None:
                getattr(model, name).add_(torch.randn(model.get_parameter(name).shape, generator=g) * 0.5)
    return model.eval()


def reference_hidden(model: tg.GPT, ids: torch.Tensor, looping: bool) -> torch.Tensor:
    """§12's formulas written out: rms_norm(tok_emb); passes 0,1,2,(1,2)x2,3 with the loop on, split 4/4 (encoder
    outputs pushed, decoder pass k takes skip k through its gate: sigmoid(g) x + (1 - sigmoid(g)) w skip); block 3
    GPT-J: x_in + a Attn(n) + m MLP(n) with n = rms_norm(x_in) f; LN scale by physical block."""
    x = tg.rms_norm(model.tok_emb(ids))
    x0, skips = x, []
    rope = tg.rotary(ids.size(1), model.rope_dims, model.rope_base, CPU, model.rope_reference_len)
    order = [0, 1, 2, 1, 2, 1, 2, 3] if looping else [0, 1, 2, 3]
    half = len(order) // 2
    for v, i in enumerate(order):
        block = model.blocks[i]
        if v >= half:
            k = v - half
            if k < half:
                g = torch.sigmoid(model.skip_gates[k])
                x = g * x + (1 - g) * model.skip_weights[k] * skips.pop()
        x_in = block.resid_mix[0] * x + block.resid_mix[1] * x0
        n = tg.rms_norm(x_in) * (1 / math.sqrt(i + 1))
        a = block.attn_scale * block.attn(n, None, rope)
        if i == 3:
            x = x_in + a + block.mlp_scale * block.mlp(n)
        else:
            x = x_in + a
            x = x + block.mlp_scale * block.mlp(tg.rms_norm(x) * (1 / math.sqrt(i + 1)))
        if v < half:
            skips.append(x)
    return x


def test_the_full_configuration_is_the_records_model():
    """configs/sp8192.env builds 35,944,536 parameters, the record's count: 11 blocks of 512 with MLP 4x, the 8192 x 512
    table, 8 skip weights and 8 skip gates of 512 (17 passes: 8 encoder, 9 decoder); nothing of the bigram, the smear
    gate or the value embeddings."""
    env = load_tool("scripts/proxy.py", "proxy").read_env_file(REPO / "configs" / "sp8192.env")
    args = tg.Hyperparameters(**{k.lower(): v for k, v in env.items() if k not in tg.OTHER_VARIABLES}, run_id="config")
    model = tg.build_model(args)
    assert sum(p.numel() for p in model.parameters()) == 35_944_536
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes["skip_weights"] == shapes["skip_gates"] == [8, 512] and shapes["tok_emb.weight"] == [8192, 512]
    assert shapes["blocks.0.mlp.fc.weight"] == [2048, 512] and not any(k.startswith(("bigram", "smear", "ve_")) for k in shapes)
    assert [b.gptj for b in model.blocks] == [False] * 7 + [True] * 4 and not any(b.parallel for b in model.blocks)
    model.recurring = True  # 17 passes: the first 8 pushed, decoder pass k takes skip k, the last none
    assert [(i, push, skip) for i, _, push, skip in model.passes()] == (
        [(i, True, None) for i in (0, 1, 2, 3, 4, 5, 3, 4)] + [(i, False, k) for k, i in enumerate((5, 3, 4, 5, 6, 7, 8, 9))]
        + [(10, False, None)])
    model.recurring = False  # the plain 5/6 split uses pairs 0-4
    assert [skip for *_, skip in model.passes()] == [None] * 5 + [0, 1, 2, 3, 4, None]
    assert env["SEEDS"] == "42 314 999"


def test_names_and_shapes_and_what_each_option_adds_or_removes():
    plain, model = tg.build_model(tiny_args()).state_dict(), tg.build_model(tiny_args(**SP)).state_dict()
    assert {k for k in model if k not in plain} == {"skip_gates", "config_loop_layers", "config_loop_passes"}
    assert {k.split(".")[0] for k in plain if k not in model} == {"bigram", "smear", "ve_shared", "ve_layer_scales"}
    assert model["skip_weights"].shape == model["skip_gates"].shape == (4, 32)  # 8 passes: 4 pairs
    assert torch.equal(model["skip_gates"], torch.zeros(4, 32)) and torch.equal(model["skip_weights"], torch.ones(4, 32))
    assert model["config_loop_layers"].tolist() == [1, 2] and model["config_loop_passes"].tolist() == [3]
    assert plain["skip_weights"].shape == (2, 32)  # 4 blocks without a loop: 2 pairs, as the record's default


@pytest.mark.parametrize("looping", [False, True])
def test_forward_is_the_formulas(looping):
    model = sp_model()
    model.recurring = looping
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.hidden(ids), reference_hidden(model, ids, looping), rtol=1e-5, atol=1e-5)
    other = sp_model()
    other.recurring = not looping
    with torch.no_grad():
        assert not torch.allclose(model.hidden(ids), other.hidden(ids), atol=1e-3)


def test_every_parameter_gets_a_gradient_with_the_loop_on():
    model = sp_model().train()
    model.recurring = True
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    model(ids[:, :-1], ids[:, 1:]).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert (model.skip_gates.grad.abs().sum(dim=1) > 0).all() and (model.skip_weights.grad.abs().sum(dim=1) > 0).all()


def test_compiled_equals_eager():
    model = sp_model()
    model.recurring = True
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = model.forward_logits(ids)
        compiled = torch.compile(model.forward_logits, dynamic=False, fullgraph=True)(ids)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_the_loop_switches_on_inside_a_compiled_run_and_compiles_nothing_after_priming(tiny_env, monkeypatch):
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn=None, **kw: compile_(fn, **dict(kw, backend=counter)))
    counts, prime, evaluate = {}, tg.warmup_prime, tg.evaluate
    monkeypatch.setattr(tg, "warmup_prime", lambda *a, **k: (prime(*a, **k), counts.setdefault("primed", counter.frame_count)))
    monkeypatch.setattr(tg, "evaluate", lambda *a, **k: (counts.setdefault("evaluation", counter.frame_count), evaluate(*a, **k))[1])
    for key, value in dict(SP_ENV, COMPILE="1", LOOP_START_FRAC="0.3", ITERATIONS="10", WARMDOWN_FRAC="0.5",
                           LATE_QAT_THRESHOLD="0", TTT_ENABLED="0").items():
        monkeypatch.setenv(key, value)
    try:
        tg.main()
    finally:
        torch._dynamo.reset()
    one(run_lines("logs/tiny.txt"), r"recurrence:enabled step:3 layers:1,2 virtual_layers:8")
    assert counts["primed"] > 0 and counts["evaluation"] == counts["primed"], counts


def test_priming_builds_no_qat_graph_where_late_qat_never_switches_on(tiny_data, monkeypatch):
    """LATE_QAT_THRESHOLD=0 (the SP8192 record): priming never switches QAT on, so it compiles no graph that will not run;
    with the record's 0.15 every other priming step has it on."""
    from conftest import tiny_run_env
    switches = []
    monkeypatch.setattr(tg.GPT, "set_qat", lambda self, enabled, soft_round, tau: switches.append(enabled))
    for threshold, expected in (("0", [False] * 5), ("0.15", [False, True, False, True, False])):
        switches.clear()
        args = tiny_args(late_qat_threshold=threshold, warmup_steps="4", data_path=str(tiny_data))
        model = tg.build_model(args)
        loader = tg.DistributedTokenLoader(tg.list_shards(tiny_data, "train"), 0, 1, CPU)
        tg.warmup_prime(model, tg.build_optimizers(model, args, ONE), loader, args, ONE)
        assert switches == expected, threshold


def test_the_loop_switches_on_at_its_fraction_of_the_clock():
    args = tiny_args(**SP, loop_start_frac="0.35", iterations="100", max_wallclock_seconds="0")
    assert not tg.recurrence_due(34, 1e9, args) and tg.recurrence_due(35, 0.0, args)
    capped = tiny_args(**SP, loop_start_frac="0.35", max_wallclock_seconds="100")
    assert not tg.recurrence_due(10_000, 34_999.0, capped) and tg.recurrence_due(1, 35_000.0, capped)
    repeats = tiny_args(recur_layers="1,2", warmup_steps="4", recur_step="7")
    assert not tg.recurrence_due(6, 1e9, repeats) and tg.recurrence_due(7, 0.0, repeats)


def test_an_artifact_of_the_options_is_read_back_and_checks_the_loop(tiny_env, monkeypatch):
    """The tiny SP configuration end to end (the loop from 30 % of the run, MuonEq-R, the embedding's decay, the
    warmdown by fraction, GPTQ with SDClip scales for the matrices and the embedding, brotli, the record's loader),
    read back by eval-only mode with the same roundtrip; then scored with another loop: refused."""
    env = dict(SP_ENV, LOOP_START_FRAC="0.3", MUON_ROW_NORM="1", EMBED_WD="0.085", WARMDOWN_FRAC="0.72",
               LATE_QAT_THRESHOLD="0", SWA_ENABLED="0", TTT_BURST_ENABLED="0", QUANT_METHOD="gptq", GPTQ_SCALES="sdclip",
               GPTQ_EMBED="1", GPTQ_SEQUENCES="4", COMPRESSOR="brotli", LOADER="shuffled", TTT_ENABLED="0")
    lines = run_and_reread(monkeypatch, **env)
    one(lines, r"recurrence:enabled step:4 layers:1,2 virtual_layers:8")  # 30 % of 12 steps
    one(lines, r"quantized_tensors: int6:24 int8:1 passthrough:\d+")
    assert not any(line.startswith(("late_qat", "swa:", "ttt_burst")) for line in lines)
    monkeypatch.setenv("LOOP_PASSES", "2")  # its settings are checked before its shapes (skip_weights differ too)
    with pytest.raises(tg.InputError, match=r"^the artifact was trained with LOOP_PASSES=3, and this run has LOOP_PASSES=2$"):
        tg.main()
    monkeypatch.setenv("LOOP_PASSES", "3")
    monkeypatch.setenv("LOOP_LAYERS", "0,1")
    with pytest.raises(tg.InputError, match=r"^the artifact was trained with LOOP_LAYERS=1,2, and this run has LOOP_LAYERS=0,1$"):
        tg.main()


def test_rope_reference_length():
    cos, sin = tg.rotary(64, 8, 10000.0, CPU, reference_len=64)  # at the reference length: the base as it is
    angles = torch.outer(torch.arange(64.0), 10000.0 ** (-torch.arange(0, 8, 2) / 8))
    torch.testing.assert_close(cos[0, :, 0], angles.cos())
    cos, _ = tg.rotary(64, 8, 10000.0, CPU, reference_len=32)  # beyond it: NTK-rescaled
    scaled = torch.outer(torch.arange(64.0), (10000.0 * 2 ** (8 / 6)) ** (-torch.arange(0, 8, 2) / 8))
    torch.testing.assert_close(cos[0, :, 0], scaled.cos())
    assert tg.build_model(tiny_args(rope_reference_len="2048")).rope_reference_len == 2048


def test_muon_row_norm_normalises_each_row_of_the_direction_before_newton_schulz():
    shape = (6, 10)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(4)) * torch.arange(1.0, 7.0)[:, None]
    out = {}
    for row_norm in (False, True):
        p = torch.nn.Parameter(torch.zeros(shape))
        p.grad = grad.clone()
        tg.Muon([p], 1.0, 0.5, 5, 0.0, row_norm=row_norm).step()
        out[row_norm] = -p.detach()
    direction = grad * 1.5  # g + mu (mu g) from zero momentum
    torch.testing.assert_close(out[True], tg.newton_schulz5(direction / direction.norm(dim=1, keepdim=True), 5), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[False], tg.newton_schulz5(direction, 5), rtol=0, atol=1e-6)
    assert not torch.allclose(out[True], out[False], atol=1e-3)


def test_the_embedding_has_its_own_weight_decay():
    for embed_wd, expected in (("-1", 0.06), ("0.085", 0.085)):
        args = tiny_args(adam_wd="0.06", embed_wd=embed_wd)
        adam = tg.build_optimizers(tg.build_model(args), args, ONE).adam
        assert [g["weight_decay"] for g in adam.param_groups] == [expected, 0.06]


def test_warmdown_by_fraction_of_the_clock_never_below_min_lr():
    """Linear to 0 over the last WARMDOWN_FRAC of the clock, floored at MIN_LR (as the records' code does)."""
    args = tiny_args(warmdown_frac="0.72", min_lr="0.1", max_wallclock_seconds="100")
    assert tg.lr_scale(5000, 28_000.0, args) == 1.0 and tg.lr_scale(1, 0.0, args) == 1.0
    assert tg.lr_scale(0, 64_000.0, args) == pytest.approx(0.5)  # half way through the warmdown
    assert tg.lr_scale(0, 96_000.0, args) == pytest.approx(0.1)  # 4/72 would be below the floor
    assert tg.lr_scale(0, 100_000.0, args) == pytest.approx(0.1) and tg.lr_scale(0, 2e5, args) == pytest.approx(0.1)
    steps = tiny_args(warmdown_frac="0.5", iterations="100", max_wallclock_seconds="0")
    assert [tg.lr_scale(s, 1e9, steps) for s in (0, 50, 75, 100)] == pytest.approx([1.0, 1.0, 0.5, 0.0])


def shards(tmp_path, sizes):
    files = []
    for i, n in enumerate(sizes):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", (np.arange(n) + 1000 * i) % 60000)
        files.append(tmp_path / f"fineweb_train_{i:06d}.bin")
    return files


def test_the_shuffled_loader_reads_each_window_of_its_own_shards_once_per_pass(tmp_path):
    """Rank r owns shards r::world; a window is seq_len + 1 tokens from the shard's phase; a pass reads every window
    once (the draws follow the windows left) before any is read again; the same for every SEED (seeded by the rank);
    state and restore exact."""
    files = shards(tmp_path, [4 * 17 + 5, 3 * 17 + 2, 5 * 17 + 16])
    loader = tg.ShuffledLoader(files, 1, 2, CPU)  # rank 1 of 2: shard 1 alone
    assert len(loader.shards) == 1 and loader.shards[0][0] == 1000
    loader = tg.ShuffledLoader(files, 0, 1, CPU)
    x, y = loader.next_batch(16, 16)  # one sequence: the pass starts
    assert x.shape == y.shape == (1, 16) and torch.equal(x[:, 1:], y[:, :-1])
    expected = sorted((i, int(start)) for i, (starts, _) in enumerate(loader.windows) for start in starts)
    seen = [(int(x[0, 0]) // 1000, int(x[0, 0]) % 1000)]
    seen += [(int(r[0, 0]) // 1000, int(r[0, 0]) % 1000) for r in (loader.next_batch(16, 16)[0] for _ in range(len(expected) - 1))]
    assert sorted(seen) == expected  # every window of the pass once
    for i, (starts, _) in enumerate(loader.windows):  # one phase per shard, windows of 17
        assert len(starts) >= (len(loader.shards[i]) - 16) // 17 and all((int(s) - int(starts[0])) % 17 == 0 for s in starts)
    state = loader.state()
    first = loader.next_batch(64, 16)[0]  # a new pass
    loader.restore(state)
    assert torch.equal(loader.next_batch(64, 16)[0], first)
    assert torch.equal(tg.ShuffledLoader(files, 0, 1, CPU).next_batch(64, 16)[0], tg.ShuffledLoader(files, 0, 1, CPU).next_batch(64, 16)[0])


def test_the_shuffled_loader_draws_by_windows_left_and_keeps_a_window_in_short_shards(tmp_path):
    """Each draw's probabilities are the shards' windows left over their sum; a shard of fewer than two windows' tokens
    gets a phase that leaves it one (a phase up to seq_len once left it none in some passes)."""
    files = shards(tmp_path, [17 + 3, 100 * 17 + 9])  # one window, and a hundred
    loader = tg.ShuffledLoader(files, 0, 1, CPU)
    seen = []

    class Recording:  # the loader's generator, recording each draw's probabilities
        def __init__(self, rng):
            self.rng = rng

        def choice(self, n, p):
            seen.append(p.tolist())
            return self.rng.choice(n, p=p)

        def __getattr__(self, name):
            return getattr(self.rng, name)
    loader.rng = Recording(loader.rng)
    for _ in range(20):
        left = [len(starts) - read for starts, read in loader.windows] if loader.windows else None
        loader.next_batch(16, 16)
        if left is not None:
            assert seen[-1] == pytest.approx([n / sum(left) for n in left])
    for _ in range(30):  # many passes: the short shard always has its window
        loader._start_pass()
        assert len(loader.windows[0][0]) == 1 and 0 <= int(loader.windows[0][0][0]) <= 3


def test_the_shuffled_loader_refuses_what_it_cannot_read(tmp_path):
    short = tmp_path / "short"
    short.mkdir()
    shards(short, [10, 12])
    with pytest.raises(tg.InputError, match=r"LOADER=shuffled reads each sequence from one shard, and no training shard holds"):
        tg.make_loader(tg.list_shards(short, "train"), tiny_args(loader="shuffled"), ONE)
    shards(tmp_path, [100, 100, 10])
    for rank in (0, 1, 2):  # every rank checks every rank's shards: rank 2's too short, and rank 3 has none
        with pytest.raises(tg.InputError, match=r"^LOADER=shuffled gives each rank shards of its own, and rank 2's \(1 of 3\) "
                                                r"hold no sequence of TRAIN_SEQ_LEN \+ 1 = 33 tokens$"):
            tg.make_loader(tg.list_shards(tmp_path, "train"), tiny_args(loader="shuffled"), tg.Runtime(rank, 4, CPU))


def test_sdclip_scales_are_k_standard_deviations_and_gptq_runs_once_with_them():
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(5)) * torch.linspace(0.1, 2.0, 16)[:, None]
    scale = tg.sdclip_scale(w, 12.85, 31)
    assert scale.dtype == torch.half
    torch.testing.assert_close(scale.float(), (12.85 * w.std(dim=1) / 31).half().float())
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(6))
    h = x.T @ x / 256
    q, s = tg.gptq_quantize(w, h, 31, tg.INT6_CLIP_QUANTILES, sdclip_k=12.85)
    assert torch.equal(s, scale) and q.dtype == torch.int8 and q.abs().max() <= 31
    searched = tg.gptq_quantize(w, h, 31, tg.INT6_CLIP_QUANTILES)
    assert not torch.equal(searched[1], s)
    # clipping at 12.85 standard deviations puts Gaussian rows on a few levels: far fewer bytes than the searched scales
    size = lambda q: len(tg.zstandard.ZstdCompressor(level=22).compress(q.numpy().tobytes()))
    assert q.abs().max() <= 12 and size(q) < 0.8 * size(searched[0])


def test_gptq_of_the_embedding_uses_the_head_input_and_int8():
    """GPTQ_EMBED: tok_emb is quantised by GPTQ (int8, its Hessian that of the tied head's input), not by clip search;
    its H-weighted error is lower; the other tables stay clip search."""
    model = filled_model(tiny_args())
    ids = torch.randint(0, 512, (8, 32), generator=torch.Generator().manual_seed(7))
    hessians = tg.collect_hessians(model.eval(), [ids])
    weights = {k: v.float() for k, v in model.state_dict().items()}
    plain = tg.quantize_state_dict(weights, 256, hessians)
    embedded = tg.quantize_state_dict(weights, 256, hessians, gptq_embed=True)
    assert embedded["m"]["tok_emb.weight"] == {"type": "int8"} and embedded["w"]["tok_emb.weight.q"].abs().max() <= 127
    assert torch.equal(embedded["w"]["bigram.embed.weight.q"], plain["w"]["bigram.embed.weight.q"])
    h, w = hessians["tok_emb.weight"], weights["tok_emb.weight"]
    error = lambda c: float((((w - c["w"]["tok_emb.weight.q"].float() * c["w"]["tok_emb.weight.scale"].float()[:, None]) @ h)
                             * (w - c["w"]["tok_emb.weight.q"].float() * c["w"]["tok_emb.weight.scale"].float()[:, None])).sum())
    assert error(embedded) < error(plain)
    sd = tg.quantize_state_dict(weights, 256, hessians, gptq_embed=True, scale_rule="sdclip", sdclip_k=(12.85, 20.0))
    torch.testing.assert_close(sd["w"]["tok_emb.weight.scale"], tg.sdclip_scale(w, 20.0, 127))


def test_bad_settings_are_one_line():
    with pytest.raises(tg.InputError, match=r"^RECUR_LAYERS and LOOP_LAYERS are two forms of depth recurrence: set one$"):
        tiny_args(**SP, recur_layers="1,2")
    with pytest.raises(tg.InputError, match=r"^LOOP_LAYERS=1,3 must be consecutive blocks from 0 on, before PARALLEL_FROM"):
        tiny_args(**dict(SP, loop_layers="1,3"))
    with pytest.raises(tg.InputError, match=r"^LOOP_LAYERS=2 must be consecutive blocks from 0 on, before PARALLEL_FROM"):
        tiny_args(**dict(SP, loop_layers="2", parallel_from="2"))
    with pytest.raises(tg.InputError, match=r"^LOOP_PASSES must be >= 2"):
        tiny_args(**dict(SP, loop_passes="1"))
    with pytest.raises(tg.InputError, match=r"^LOOP_LAYERS needs WARMUP_STEPS >= 4"):
        tiny_args(**dict(SP, warmup_steps="2"))
    with pytest.raises(tg.InputError, match=r"^PARALLEL_FORM must be lanes or gptj, got 'x'$"):
        tiny_args(parallel_form="x")
    with pytest.raises(tg.InputError, match=r"^GPTQ_SCALES=sdclip is a setting of GPTQ: it needs QUANT_METHOD=gptq$"):
        tiny_args(gptq_scales="sdclip")
    with pytest.raises(tg.InputError, match=r"^GPTQ_EMBED=True is a setting of GPTQ: it needs QUANT_METHOD=gptq$"):
        tiny_args(gptq_embed="1")
    for name, value in (("warmdown_frac", "1"), ("min_lr", "1.5"), ("loop_start_frac", "2")):
        with pytest.raises(tg.InputError, match=rf"^{name.upper()} must be in \[0, 1"):
            tiny_args(**{name: value})


def test_the_configuration_runs_end_to_end_on_cpu_with_8192_pieces(tmp_path):
    """CONFIG=configs/sp8192.env bash scripts/smoke.sh: the record's configuration at the smoke size on the sample built
    with an 8192-piece tokenizer (data/sample_sp8192), every stage with the loop switching on; eval-only mode reads its
    artifact back with the same figures."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    for path in ("train_gpt.py", "data/make_sample.py", "configs/sp8192.env"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, repo / path)
    shutil.copytree(REPO / "scripts", repo / "scripts")
    env = clean_environ(CONFIG="configs/sp8192.env", ITERATIONS="4", TRAIN_BATCH_TOKENS="1024", VAL_LOSS_EVERY="0",
                        VAL_TOKENS="1024", RUN_ID="sp")  # the smoke size, shortened: 4 steps of 8 sequences
    result = run_script(["bash", "scripts/smoke.sh"], env, cwd=repo, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    lines = run_lines(repo / "logs" / "sp.txt")
    assert '"vocab_size": 8192' in lines[0] and '"loop_layers": [3, 4, 5]' in lines[0] and '"data_path": "data/sample_sp8192"' in lines[0]
    one(lines, r"recurrence:enabled step:2 layers:3,4,5 virtual_layers:17")  # at 35 % of 4 steps
    one(lines, r"quantized_tensors: int6:66 int8:1 passthrough:\d+")
    roundtrip = one(lines, r"final_int6_roundtrip_exact .*")[0]
    one(lines, r"final_ttt_exact val_loss:[\d.]+ val_bpb:[\d.]+")
    reread = run_script(["bash", "scripts/smoke.sh"], dict(env, EVAL_ARTIFACT="final_model.int6.ptz", RUN_ID="reread"),
                        cwd=repo, timeout=600)
    assert reread.returncode == 0, reread.stderr[-3000:]
    assert one(run_lines(repo / "logs" / "reread.txt"), r"final_int6_roundtrip_exact .*")[0] == roundtrip
