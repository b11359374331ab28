"""The speed work (recipe §9, §10.6) changes no result: the output head on the scored tail only, padded
batches, host-side scored positions and padded TTT rows give what the straightforward path of
scripts/bench.py gives (one process and 2 gloo ranks, to 1e-6 in val_bpb); compiled evaluations
trace a fixed set of graphs however uneven the last batch, chunk or step; the benchmark prints its
table. Timings are the benchmark's business, not the tests'."""
import re

import pytest
import torch
from torch._dynamo.testing import CompileCounter

import train_gpt as tg
from conftest import (CHUNK as K, CPU, ONE, REPO, SEQ_LEN as L, STRIDE as S, clean_environ, filled_model, load_inputs,
                      load_tool, run_script, scoring_model, spawn_gloo, tiny_args, torchrun_cmd)

bench = load_tool("scripts/bench.py", "bench")

# 9 chunks of K targets less 3: a short last chunk, a short last batch of windows; TTT steps of 3
# sequences over a chunk's K / L = 8 (3, 3, 2): with 2 ranks, shares of 2 and 1, and 1 and 1
N_TARGETS = 9 * K - 3
UNEVEN = dict(ttt_epochs=2, ttt_lr=0.01, ttt_train_batch_seqs=3, val_batch_size=5 * L, ttt_grad_clip=0.5)


def test_head_on_the_last_positions_equals_the_full_head():
    model = scoring_model()
    ids = torch.randint(0, 512, (3, L), generator=torch.Generator().manual_seed(0))
    targets = ids.roll(-1, dims=1)
    full = model(ids, targets, reduction="none")
    assert full.shape == (3, L)
    assert torch.allclose(model(ids, targets[:, -S:], reduction="none"), full[:, -S:], rtol=1e-6, atol=1e-6)
    assert torch.allclose(model(ids, targets), full.mean(), rtol=1e-6)
    ignored = targets.clone()
    ignored[1:] = -100
    assert torch.allclose(model(ids, ignored, reduction="sum"), full[0].sum(), rtol=1e-6)


def paths(model, val, token_bytes, args, rt):
    """(ours, straightforward) val_bpb of the standard, sliding and TTT evaluations."""
    ours = {"standard": tg.evaluate(model, val, token_bytes, args, rt)[1],
            "sliding": tg.evaluate(model, val, token_bytes, args, rt, args.eval_stride)[1]}
    plain = {"standard": bench.straightforward_evaluate(model, val, token_bytes, args, rt)[1],
             "sliding": bench.straightforward_evaluate(model, val, token_bytes, args, rt, args.eval_stride)[1]}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    ours["ttt"] = tg.evaluate_ttt(model, val, token_bytes, args, rt)[1]
    model.load_state_dict(weights)
    plain["ttt"] = bench.straightforward_ttt(model, val, token_bytes, args, rt)[1]
    model.load_state_dict(weights)
    return ours, plain


def assert_same_bpb(ours, plain):
    for name in ("standard", "sliding"):
        assert ours[name] == pytest.approx(plain[name], rel=1e-12, abs=0), name
    assert abs(ours["ttt"] - plain["ttt"]) <= 1e-6
    assert ours["ttt"] != ours["sliding"]  # the TTT steps did train


def test_ours_equals_the_straightforward_path_in_one_process(tiny_data):
    val, token_bytes = load_inputs(tiny_data, N_TARGETS)
    assert_same_bpb(*paths(scoring_model(), val, token_bytes, tiny_args(**UNEVEN), ONE))


def _ranked_paths(rank, world_size, tiny_data):
    val, token_bytes = load_inputs(tiny_data, N_TARGETS)
    return paths(scoring_model(), val, token_bytes, tiny_args(**UNEVEN), tg.Runtime(rank, world_size, CPU))


def test_ours_equals_the_straightforward_path_on_two_gloo_ranks(tiny_data):
    """The benchmark's TTT comparison on 2 ranks, with uneven shares of windows and rows."""
    # import what the children need, then fork
    paths(scoring_model(), *load_inputs(tiny_data, 2 * K), tiny_args(**UNEVEN), ONE)
    results = spawn_gloo(_ranked_paths, 2, tiny_data)
    assert results[0] == results[1]  # every rank reports the totals
    assert_same_bpb(*results[0])


def test_compiled_evaluations_trace_a_fixed_set_of_graphs(tiny_data, monkeypatch):
    """Padding keeps the compiled shapes static: the standard and full-head batch, the tail-head batch
    and the TTT step are all the graphs there are, whatever the length of the last batch, chunk or
    step; and the compiled results are the eager ones."""
    counter = CompileCounter()
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, **dict(kw, backend=counter)))
    torch._dynamo.reset()
    val, token_bytes = load_inputs(tiny_data, N_TARGETS)
    args = tiny_args(compile="1", **UNEVEN)
    eager = scoring_model()
    compiled = tg.compile_model(scoring_model(), args, CPU)
    auto = tg.compile_model(scoring_model(), tiny_args(compile="auto"), CPU)
    assert auto._compiled_call_impl is None  # auto: CUDA only
    assert counter.frame_count == 0
    for model in (eager, compiled):
        results = [tg.evaluate(model, val, token_bytes, args, ONE),
                   tg.evaluate(model, val, token_bytes, args, ONE, S),
                   tg.evaluate_ttt(model, val, token_bytes, args, ONE)[:2]]
        if model is eager:
            expected = results
    assert counter.frame_count == 3, f"{counter.frame_count} graphs: padding let a shape vary"
    assert results == expected
    torch._dynamo.reset()


def test_previous_muon_computes_our_updates():
    """The benchmark's previous Muon (all-reduced updates) gives our updates in one process."""
    shapes = [(8, 16), (16, 8), (8, 16), (12, 12), (20, 6)]
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=g) for s in shapes]
    results = []
    for make in (lambda ps: tg.Muon(ps, 0.05, 0.9, 5, 0.04), lambda ps: bench.AllReduceMuon(ps, 0.05, 0.9, 5, 0.04, torch.float32)):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = make(params)
        for step in range(3):
            gen = torch.Generator().manual_seed(100 + step)
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        results.append([p.detach() for p in params])
    for a, b, s in zip(*results, start):
        assert torch.allclose(a, b, atol=1e-6) and not torch.equal(a, s)


# ----------------------------------------------------------------------------- traffic per training step

# The record's topology and matrix proportions at an eighth of its width: 11 blocks of dimension 64,
# tables of 1024 / 8 and 3072 / 8 rows; bf16 tables, autocast and updates, as on CUDA.
NARROW = dict(num_layers=11, model_dim=64, num_heads=8, num_kv_heads=4, rope_dims=4, xsa_last_n=4, ve_layers="9,10",
              ve_dim=16, bigram_vocab_size=384, bigram_dim=16, vocab_size=128, train_seq_len=16, train_batch_tokens=8 * 16)


def ring_bytes(numel_bytes: float, world_size: int, all_reduce: bool) -> float:
    return (2 if all_reduce else 1) * (world_size - 1) / world_size * numel_bytes


def expected_bytes(model, world_size: int) -> tuple[float, float]:
    """(ours, previous) bytes each rank sends per step with bf16 tables and updates, by formula:
    ours reduce-scatters the fp32 matrix gradients (shares padded), all-gathers their bf16 updates,
    all-reduces the rest and one fp32 norm; previous all-reduces every gradient (DDP), then a
    full-size bf16 buffer of updates."""
    matrices = [m.weight for m in model.modules() if isinstance(m, tg.CastedLinear)]
    taken = {id(p) for p in matrices}
    rest = sum(p.numel() * (2 if isinstance(m, torch.nn.Embedding) else 4)
               for m in model.modules() for p in m.parameters(recurse=False) if id(p) not in taken)
    sizes = [p.numel() for p in matrices]
    padded = world_size * max(sum(sizes[i] for i in share) for share in tg.deal_out(sizes, world_size))
    ours = ring_bytes(4 * padded + 2 * padded, world_size, False) + ring_bytes(rest + 4, world_size, True)
    previous = ring_bytes(4 * sum(sizes) + rest + 2 * sum(sizes), world_size, True)
    return ours, previous


def _bytes_per_step(rank, world_size):
    """One training step of ours and one of the previous path on this rank, counted."""
    args = tiny_args(**NARROW)
    rt = tg.Runtime(rank, world_size, CPU, bf16=True)
    ids = torch.randint(0, args.vocab_size, (rt.grad_accum_steps, 1, args.train_seq_len + 1),
                        generator=torch.Generator().manual_seed(rank))
    batches = [(row[:, :-1], row[:, 1:]) for row in ids]
    model = tg.place_model(tg.build_model(args), rt)
    optimizers = tg.build_optimizers(model, args, rt)
    with bench.CollectiveBytes(world_size) as ours:
        tg.train_step(model, batches, optimizers, args.grad_clip_norm, rt)
    model = tg.place_model(tg.build_model(args), rt)
    ddp = bench.CollectiveBytes.watch(bench.data_parallel(model, rt))
    optimizers = bench.previous_optimizers(model, args, rt)
    with bench.CollectiveBytes(world_size) as previous:
        bench.previous_train_step(ddp, batches, optimizers, args.grad_clip_norm, rt)
    return (ours.sent, ours.calls), (previous.sent, previous.calls)


def three_steps_of_batches(args, rt) -> list:
    """This rank's micro-batches of three training steps of the tiny model."""
    return [[(row[:, :-1], row[:, 1:]) for row in torch.randint(0, args.vocab_size, (rt.grad_accum_steps, 1, args.train_seq_len + 1),
                                                                generator=torch.Generator().manual_seed(10 * step + rt.rank))]
            for step in range(3)]


def _three_steps_both_ways(rank, world_size):
    """The weights after three training steps of ours and of the previous path, from the same
    weights on the same batches."""
    args, rt = tiny_args(), tg.Runtime(rank, world_size, CPU)
    model, reference = tg.place_model(filled_model(args), rt), tg.place_model(filled_model(args), rt)
    optimizers, previous = tg.build_optimizers(model, args, rt), bench.previous_optimizers(reference, args, rt)
    ddp = bench.data_parallel(reference, rt) if world_size > 1 else reference
    for batches in three_steps_of_batches(args, rt):
        tg.train_step(model, batches, optimizers, args.grad_clip_norm, rt)
        bench.previous_train_step(ddp, batches, previous, args.grad_clip_norm, rt)
    return model.state_dict(), reference.state_dict()


@pytest.mark.parametrize("world_size", [1, 2])
def test_our_step_equals_the_previous_step(world_size):
    """Summing the gradients ourselves (reduce-scatter for Muon's matrices, all-reduce for the rest)
    and clipping by the global norm gives what DDP, clip_grad_norm_ and the all-reduced Muon give."""
    args = tiny_args()
    model = filled_model(args)
    batches = three_steps_of_batches(args, ONE)[0]
    sum(model(x, y) for x, y in batches).backward()
    assert torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]) / len(batches) > args.grad_clip_norm  # clipping acts
    results = spawn_gloo(_three_steps_both_ways, world_size) if world_size > 1 else [_three_steps_both_ways(0, 1)]
    for ours, previous in results:
        for name, w in ours.items():
            torch.testing.assert_close(w, previous[name], atol=1e-5, rtol=0, msg=name)  # Adam magnifies rounding
    assert all(torch.equal(results[0][0][k], r[0][k]) for r in results for k in results[0][0])  # the ranks agree


@pytest.mark.parametrize("world_size", [2, 8])
def test_a_training_step_sends_at_most_55_percent_of_the_previous_bytes(world_size):
    """Counted by wrapping the collectives and DDP's buckets, at 2 and 8 gloo processes, with the dtypes
    of a CUDA run; the counts equal the formula, and the formula at the record's size keeps the bound."""
    results = spawn_gloo(_bytes_per_step, world_size)
    args = tiny_args(**NARROW)
    expected_ours, expected_previous = expected_bytes(tg.place_model(tg.build_model(args), tg.Runtime(0, 1, CPU, bf16=True)),
                                                      world_size)
    for (ours, ours_calls), (previous, previous_calls) in results:
        assert ours_calls == ["all_reduce", "all_reduce", "reduce_scatter", "all_reduce", "all_gather"], ours_calls
        assert previous_calls.count("all_reduce") == len(previous_calls) >= 2
        assert ours == pytest.approx(expected_ours) and previous == pytest.approx(expected_previous)
        assert ours <= 0.55 * previous, ours / previous
    record = tg.place_model(tg.build_model(tg.Hyperparameters()), tg.Runtime(0, 1, CPU, bf16=True))
    ours, previous = expected_bytes(record, world_size)
    assert ours <= 0.55 * previous, ours / previous


ROW = re.compile(r"^\| (training|collectives|(?:standard|sliding|ttt) (?:eval|warm-up)|quantise\+zstd|[A-Z_]+=[\w,]+(?: \(on\))?) +\| (\S+) +"
                 r"\| ([\d,.]+) +\| ([\d,.]+|—) +\| ([\d.]+x|—) +\| (.*?) +\|$", re.M)


def test_bench_prints_the_table(tiny_env, capsys):
    bench.main(["--config", "default", "--steps", "1", "--warmup", "1", "--repeat", "1"])
    out = capsys.readouterr().out
    rows = {m[1]: m for m in ROW.finditer(out)}
    assert list(rows) == ["training", "PARALLEL_FROM=2", "RECUR_LAYERS=1,2 (on)", "LOADER=coprime", "standard eval",
                          "sliding eval", "ttt eval", "standard warm-up", "sliding warm-up", "ttt warm-up", "quantise+zstd"]
    for name in ("PARALLEL_FROM=2", "RECUR_LAYERS=1,2 (on)", "LOADER=coprime"):  # raced against the default
        assert rows[name][2] == "ms/step" and rows[name][6].startswith("training step; baseline: the default")
    assert re.search(r"^bench: config=default device=cpu .* world_size=1 grad_accum_steps=8 ", out, re.M)
    for name in ("standard eval", "sliding eval", "ttt eval"):
        ours, plain, diff = re.fullmatch(r"val_bpb ([\d.]+) / ([\d.]+) \(diff (\S+)\)", rows[name][6]).groups()
        assert float(diff) <= 1e-6 and abs(float(ours) - float(plain)) <= 1e-6
        assert 0 < float(ours) < 20
        ratio = float(rows[name][4].replace(",", "")) / float(rows[name][3].replace(",", ""))
        assert float(rows[name][5][:-1]) == pytest.approx(1 / ratio, rel=0.02)  # speedup = ours / straightforward
    floor = re.search(r"^arithmetic floor: (\S+) TFLOP per step / \(1 x (\S+) TFLOP/s measured matmul\) = "
                      r"(\S+) ms/step; ours takes (\S+)x the floor$", out, re.M)
    args = tg.Hyperparameters()
    assert float(floor[1]) * 1e12 == pytest.approx(bench.step_flops(tg.build_model(args), args), rel=1e-3)
    assert float(floor[3]) == pytest.approx(float(floor[1]) / float(floor[2]) * 1000, rel=1e-3)
    assert float(floor[4]) == pytest.approx(float(rows["training"][3].replace(",", "")) / float(floor[3]), rel=0.06)


def test_step_flops_counts_matmuls_and_attention():
    args = tg.Hyperparameters(num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, rope_dims=8, xsa_last_n=1,
                              ve_layers="1", ve_dim=8, bigram_vocab_size=64, bigram_dim=8, vocab_size=64, mlp_mult=2,
                              train_seq_len=16, train_batch_tokens=8 * 16)
    model = tg.build_model(args)
    per_block = 32 * 32 * 2 + 32 * 16 * 2 + 32 * 64 * 2  # q, proj; k, v; fc, proj
    side = 8 * 32 + 8 * 16  # bigram and value-embedding projections
    matmul = 2 * per_block + side + 64 * 32  # + the tied output head
    tokens = 128
    attention = 3 * 2 * 2 * 2 * tokens * 16 * 32 / 2
    assert bench.step_flops(model, args) == 6 * tokens * matmul + attention


def test_bench_rejects_unknown_rows(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--skip", "trian"])
    assert "unknown rows ['trian']" in capsys.readouterr().err


def test_bench_under_torchrun_with_two_gloo_ranks(tiny_env, tmp_path):
    """The form docs/performance.md's figures were measured in: 2 gloo processes; both paths agree."""
    result = run_script(torchrun_cmd() + ["--standalone", "--nproc_per_node=2", str(REPO / "scripts" / "bench.py"),
                                          "--config", "default", "--steps", "1", "--warmup", "0", "--repeat", "1",
                                          "--skip", "options,standard,sliding"],
                        clean_environ(**tiny_env), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {m[1]: m for m in ROW.finditer(result.stdout)}
    assert list(rows) == ["training", "collectives", "ttt eval", "ttt warm-up", "quantise+zstd"]
    assert "world_size=2 grad_accum_steps=4" in result.stdout
    ours_loss, previous_loss = re.fullmatch(r"train_loss (\S+) / (\S+)", rows["training"][6]).groups()
    assert ours_loss == previous_loss  # the first step of both paths, from the same weights and data
    ours, previous = float(rows["collectives"][3]), float(rows["collectives"][4])
    assert ours < previous and float(rows["collectives"][5][:-1]) == pytest.approx(previous / ours, rel=0.02)
    assert float(re.search(r"\(diff (\S+)\)", rows["ttt eval"][6])[1]) <= 1e-6


def test_the_option_rows_train_each_option_as_a_run_builds_it(tiny_data):
    """bench's option rows: each model carries its option (lanes from block 7, the repeats on, the
    coprime loader), and a training step of each runs."""
    args = tiny_args(num_layers=11, data_path=str(tiny_data))
    setups = bench.option_setups(args, ONE)
    assert list(setups) == ["PARALLEL_FROM=7", "RECUR_LAYERS=4,5 (on)", "LOADER=coprime"]
    (p_args, parallel), (r_args, recurring), (c_args, _) = setups.values()
    assert [b.parallel for b in parallel.blocks] == [False] * 7 + [True] * 4 and p_args.parallel_from == 7
    assert recurring.recurring and len(recurring.passes()) == 13 and r_args.recur_layers == (4, 5)
    assert c_args.loader == "coprime" and isinstance(tg.make_loader(tg.list_shards(tiny_data, "train"), c_args, ONE),
                                                     tg.CoprimeLoader)
    for option_args, model in setups.values():
        assert torch.isfinite(torch.tensor(bench.trainer(model, option_args, ONE)(1)))
