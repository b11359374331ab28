"""Full-Hessian GPTQ (QUANT_METHOD=gptq, recipe §6): the algorithm against per-row rounding, dead
columns and a failing Cholesky, the Hessians of every linear layer, the two legal calibrations (train
batches inside the wallclock, text the model generates without reading data), and the container the
record's dequantiser reads."""
import pytest
import torch

import train_gpt as tg
from conftest import CPU, ONE, filled_model, one, run_and_reread, spawn_gloo, tiny_args

CANDIDATES = tg.INT6_CLIP_QUANTILES


def weighted_error(w, q, scale, h):
    e = w - q.float() * scale.float()[:, None]
    return ((e @ h) * e).sum().item()


def random_spd(n, seed=0, tokens=400):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, n, generator=g) @ torch.randn(n, n, generator=g)
    return x.T @ x / tokens


def heavy_weight(rows=24, cols=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g) * torch.rand(rows, 1, generator=g) * 3


def test_a_diagonal_hessian_reduces_to_per_row_rounding():
    """Without correlations between inputs there is no error to spread: GPTQ rounds each weight,
    and picks per row the clip whose (diagonally weighted) error is least, as clip search does with
    a uniform diagonal."""
    w = heavy_weight()
    q, scale = tg.gptq_quantize(w, torch.eye(40) * 2.5, 31, CANDIDATES)
    ref_q, ref_scale = tg.quantize_rows(w, 31, CANDIDATES)
    assert torch.equal(q, ref_q) and torch.equal(scale, ref_scale)


def test_a_random_hessian_gives_less_weighted_error_than_rounding_with_the_same_scales():
    w, h = heavy_weight(), random_spd(40)
    q, scale = tg.gptq_quantize(w, h, 31, CANDIDATES)
    rounded = torch.clamp(torch.round(w / scale.float()[:, None]), -31, 31)
    assert weighted_error(w, q, scale, h) < 0.8 * weighted_error(w, rounded, scale, h)
    clip_q, clip_scale = tg.quantize_rows(w, 31, CANDIDATES)
    assert weighted_error(w, q, scale, h) < weighted_error(w, clip_q, clip_scale, h)
    assert q.dtype == torch.int8 and q.abs().max() <= 31 and scale.dtype == torch.float16


def test_blocks_give_the_column_by_column_result():
    w, h = heavy_weight(cols=300), random_spd(300, tokens=1000)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h + 0.1 * torch.eye(300))), upper=True)
    scale = w.abs().amax(dim=1) / 31
    torch.testing.assert_close(tg.gptq_levels(w, u, scale, 31, block=128), tg.gptq_levels(w, u, scale, 31, block=1),
                               rtol=0, atol=0)


def test_dead_columns_are_zero_and_a_failing_cholesky_falls_back_to_clip_search():
    w, h = heavy_weight(), random_spd(40)
    h[:, 7] = h[7, :] = 0  # an input that never fires
    q, scale = tg.gptq_quantize(w, h, 31, CANDIDATES)
    assert torch.all(q[:, 7] == 0) and torch.isfinite(scale.float()).all()
    assert tg.gptq_quantize(w, -torch.eye(40), 31, CANDIDATES) is None  # not positive definite after damping
    said = []
    container = tg.quantize_state_dict({"blocks.0.attn.c_q.weight": w}, 256, {"blocks.0.attn.c_q.weight": -torch.eye(40)},
                                       said.append)
    assert said == ["gptq: blocks.0.attn.c_q.weight: H is not positive definite after damping; clip search instead"]
    clip = tg.quantize_state_dict({"blocks.0.attn.c_q.weight": w}, 256)
    assert all(torch.equal(container["w"][k], clip["w"][k]) for k in clip["w"])


def test_hessians_of_every_linear_layer():
    model = filled_model(tiny_args()).eval()
    ids = torch.randint(0, 512, (3, 32), generator=torch.Generator().manual_seed(0))
    hessians = tg.collect_hessians(model, [ids[:2], ids[2:]])
    linear = {n + ".weight" for n, m in model.named_modules() if isinstance(m, tg.CastedLinear)}
    assert set(hessians) == linear | {"tok_emb.weight"}  # and the tied head's input, for GPTQ_EMBED
    for name, h in hessians.items():
        weight = model.state_dict()[name]
        assert h.shape == (weight.shape[1],) * 2 and torch.allclose(h, h.T, atol=1e-5), name
        assert torch.linalg.eigvalsh(h.double()).min() > -1e-4 * h.diagonal().max()
    for i in range(4):  # q, k and v read the same input
        a = f"blocks.{i}.attn."
        assert torch.equal(hessians[a + "c_q.weight"], hessians[a + "c_k.weight"])
        assert torch.equal(hessians[a + "c_q.weight"], hessians[a + "c_v.weight"])
    # the mean over the tokens of both batches: the input of the output head's... first block's q
    inputs = []
    handle = model.blocks[0].attn.c_q.register_forward_pre_hook(lambda m, x: inputs.append(x[0].flatten(0, 1)))
    model.forward_logits(ids)
    handle.remove()
    x = inputs[0]
    torch.testing.assert_close(hessians["blocks.0.attn.c_q.weight"], x.T @ x / x.shape[0], rtol=1e-4, atol=1e-6)
    head_input = tg.rms_norm(model.hidden(ids)).flatten(0, 1)  # what the tied head multiplies by tok_emb^T
    torch.testing.assert_close(hessians["tok_emb.weight"], head_input.T @ head_input / head_input.shape[0], rtol=1e-4, atol=1e-6)


class Clock:
    """Time that passes only while a batch is read and run (Stream.next_batch advances it)."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Stream:
    """A loader of random token ids that counts what it hands out, each batch taking 0.25 s of the
    clock; or one that refuses to hand out anything."""

    def __init__(self, clock=None, refuse=False):
        self.clock, self.refuse, self.sequences = clock, refuse, 0

    def next_batch(self, tokens, seq_len):
        if self.refuse:
            raise AssertionError("calibration read the training data")
        self.sequences += tokens // seq_len
        self.clock.t += 0.25
        x = torch.randint(0, 512, (tokens // seq_len, seq_len))
        return x, x


def test_train_calibration_stays_inside_the_wallclock():
    """With 1 s left and each batch of 8 sequences taking 0.25 s, calibration takes 4 batches and
    stops: the logged train_time (loop plus calibration) is within MAX_WALLCLOCK_SECONDS."""
    args = tiny_args(quant_method="gptq", gptq_calibration="train", gptq_sequences=64, max_wallclock_seconds=10,
                     gptq_reserve_seconds=1)
    assert args.train_seconds == 9
    said, clock = [], Clock()
    stream = Stream(clock)
    hessians = tg.calibrate(filled_model(args), stream, 9000.0, args, ONE, said.append, clock)
    line = one(said, r"gptq:calibration source:train sequences:(\d+) per rank time:(\d+)ms train_time:(\d+)ms")
    assert int(line[1]) == stream.sequences == 32
    assert int(line[3]) == 10_000 and hessians
    said, clock = [], Clock()
    stream = Stream(clock)
    tg.calibrate(filled_model(args), stream, 8900.0, args, ONE, said.append, clock)  # 1.1 s: still 4 batches
    assert stream.sequences == 32
    stream = Stream(clock)
    tg.calibrate(filled_model(args), stream, 0.0, args, ONE, said.append, clock)  # time enough: all 64
    assert stream.sequences == 64


def _calibrate_on_rank(rank, world_size, training_ms):
    """Rank 1's loop ended later (its own clock): it alone would stop reading sooner; the ranks agree instead."""
    args = tiny_args(quant_method="gptq", gptq_calibration="train", gptq_sequences=128, max_wallclock_seconds=10,
                     gptq_reserve_seconds=1)
    clock, said = Clock(), []
    stream = Stream(clock)
    hessians = tg.calibrate(filled_model(args), stream, training_ms[rank], args, tg.Runtime(rank, world_size, CPU), said.append, clock)
    return stream.sequences, sorted(hessians)


def test_ranks_agree_on_how_many_calibration_batches_they_read():
    """Each rank reads batches while its own time allows; a rank that would stop first stops every rank, so all read the
    same number (the Hessians are averaged over ranks batch for batch; unequal counts once left one rank waiting)."""
    results = spawn_gloo(_calibrate_on_rank, 2, [9000.0, 9500.0])  # rank 1 has 0.5 s left, rank 0 1 s
    assert results[0][0] == results[1][0] == 16 and results[0][1] == results[1][1]  # 2 batches of 8 sequences each


def test_self_calibration_reads_no_data():
    args = tiny_args(quant_method="gptq", gptq_calibration="self", gptq_sequences=3)
    said = []
    hessians = tg.calibrate(filled_model(args), Stream(refuse=True), 0.0, args, ONE, said.append, Clock())
    one(said, r"gptq:calibration source:self sequences:3 time:\d+ms")
    assert len(hessians) == 4 * 6 + 2 + 1  # every linear layer's input, and the tied head's (tok_emb.weight)
    text = tg.generate(filled_model(args).eval(), 3, args, ONE)
    assert text.shape == (3, args.train_seq_len) and torch.equal(text, tg.generate(filled_model(args).eval(), 3, args, ONE))


def test_a_gptq_artifact_is_the_record_container(tmp_path):
    """Same names, dtypes, ranges and meta as clip search's: the record's dequantiser (q * scale per
    row, passthrough as stored) reads it."""
    model = filled_model(tiny_args())
    ids = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(2))
    weights = model.state_dict()
    gptq = tg.quantize_state_dict(weights, 256, tg.collect_hessians(model.eval(), [ids]))
    clip = tg.quantize_state_dict(weights, 256)
    assert gptq["m"] == clip["m"]
    assert {k: (v.dtype, v.shape) for k, v in gptq["w"].items()} == {k: (v.dtype, v.shape) for k, v in clip["w"].items()}
    int6 = [k for k, m in gptq["m"].items() if m != "passthrough" and m["type"] == "int6"]
    assert int6 and any(not torch.equal(gptq["w"][k + ".q"], clip["w"][k + ".q"]) for k in int6)
    for k in int6:
        assert gptq["w"][k + ".q"].abs().max() <= 31
        record = gptq["w"][k + ".q"].float() * gptq["w"][k + ".scale"].float()[:, None]  # the record's dequantiser
        torch.testing.assert_close(tg.dequantize_state_dict(gptq, weights)[k], record)


def _quantise_on_rank(rank, world_size, weights, hessians):
    done = []
    gptq = tg.gptq_quantize

    def counted(w, h, *settings):
        done.append(w.shape)
        return gptq(w, h, *settings)
    tg.gptq_quantize = counted
    container = tg.quantize_state_dict(weights, 256, hessians, rt=tg.Runtime(rank, world_size, CPU))
    return container, done


def test_gptq_is_shared_out_over_ranks_and_gives_the_one_process_container():
    """Each of 2 gloo ranks runs GPTQ on its share of the matrices only (together all of them, once),
    and every rank ends with the container that one process computes alone."""
    model = filled_model(tiny_args())
    ids = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(2))
    weights, hessians = model.state_dict(), tg.collect_hessians(model.eval(), [ids])
    alone = tg.quantize_state_dict(weights, 256, hessians)
    ranks = spawn_gloo(_quantise_on_rank, 2, weights, hessians)
    int6 = [k for k, m in alone["m"].items() if m != "passthrough" and m["type"] == "int6"]
    shares = [done for _, done in ranks]
    assert all(shares) and sum(len(done) for done in shares) == len(int6)
    for container, _ in ranks:
        assert container["m"] == alone["m"] and container["w"].keys() == alone["w"].keys()
        assert all(torch.equal(container["w"][k], alone["w"][k]) for k in alone["w"])


@pytest.mark.parametrize("calibration", ["train", "self"])
def test_a_gptq_run_logs_its_calibration_and_eval_only_mode_reproduces_it(tiny_env, monkeypatch, calibration):
    lines = run_and_reread(monkeypatch, QUANT_METHOD="gptq", GPTQ_CALIBRATION=calibration, GPTQ_SEQUENCES="4",
                           ITERATIONS="6", WARMDOWN_ITERS="3", MAX_WALLCLOCK_SECONDS="600", GPTQ_RESERVE_SECONDS="5")
    if calibration == "train":
        m = one(lines, r"gptq:calibration source:train sequences:4 per rank time:\d+ms train_time:(\d+)ms")
        assert int(m[1]) <= 600_000
    else:
        one(lines, r"gptq:calibration source:self sequences:4 time:\d+ms")
    one(lines, r"quantize:gptq time:\d+ms")


def test_gptq_settings_are_checked():
    with pytest.raises(tg.InputError, match="QUANT_METHOD must be clip or gptq, got 'awq'"):
        tiny_args(quant_method="awq")
    with pytest.raises(tg.InputError, match="GPTQ_CALIBRATION must be train or self, got 'val'"):
        tiny_args(gptq_calibration="val")
    with pytest.raises(tg.InputError, match="GPTQ_RESERVE_SECONDS=60.0 leaves no training time"):
        tiny_args(quant_method="gptq", max_wallclock_seconds=60, gptq_reserve_seconds=60)
    assert tiny_args(max_wallclock_seconds=60, gptq_reserve_seconds=14).train_seconds == 60  # clip: no reserve
    assert tiny_args(quant_method="gptq", gptq_calibration="self", max_wallclock_seconds=60).train_seconds == 60


# ----------------------------------------------------------------------------- mixed int6/int5 (INT6_MATRICES)

def test_int6_matrices_keeps_the_largest_traces_at_int6_and_narrows_the_rest():
    model = filled_model(tiny_args())
    ids = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(2))
    hessians = tg.collect_hessians(model.eval(), [ids])
    weights = {k: v * 10 for k, v in model.state_dict().items()}  # rows well above the 1/31 scale floor: full ranges
    said = []
    mixed = tg.quantize_state_dict(weights, 256, hessians, said.append, int6_matrices=5)
    int6 = [k for k, m in mixed["m"].items() if m != "passthrough" and m["type"] == "int6"]
    kept = sorted(int6, key=lambda k: -float(hessians[k].trace()))[:5]
    assert said == [f"quantize:mixed int6:5 int5:{len(int6) - 5} (repeated blocks first, then by trace of H)"]
    for k in int6:
        top = mixed["w"][k + ".q"].abs().max()
        assert (16 <= top <= 31) if k in kept else (top <= 15), (k, top)
    assert tg.quantize_state_dict(weights, 256, hessians, int6_matrices=0)["w"].keys() == mixed["w"].keys()
    plain = tg.quantize_state_dict(weights, 256, hessians)
    assert all(torch.equal(plain["w"][k + ".q"], mixed["w"][k + ".q"]) for k in kept)
    with pytest.raises(tg.InputError, match=r"^INT6_MATRICES=5 is a setting of GPTQ: it needs QUANT_METHOD=gptq$"):
        tiny_args(int6_matrices="5")


def test_with_depth_recurrence_the_repeated_blocks_stay_int6_first():
    """As the later record did: every matrix of the repeated blocks (their second passes' MLPs included) keeps int6
    before the others are ranked by trace, even where their traces are the smallest."""
    model = filled_model(tiny_args(recur_layers="1,2", warmup_steps="4"))
    model.start_recurrence()
    ids = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(2))
    hessians = {k: h / 1e6 if k.startswith(("blocks.1.", "blocks.2.", "repeats.")) else h
                for k, h in tg.collect_hessians(model.eval(), [ids]).items()}  # the repeated blocks' traces the smallest
    weights = {k: v * 10 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    repeated = [k for k in hessians if k.startswith(("blocks.1.", "blocks.2.", "repeats.")) and tg.quant_kind(k, weights[k], 256) == "int6"]
    mixed = tg.quantize_state_dict(weights, 256, hessians, int6_matrices=len(repeated))
    for k, m in mixed["m"].items():
        if m != "passthrough" and m["type"] == "int6":
            top = mixed["w"][k + ".q"].abs().max()
            assert (16 <= top <= 31) if k in repeated else (top <= 15), (k, top)


def test_the_size_estimate_counts_the_int5_matrices_as_the_smallest():
    args, mixed_args = tiny_args(quant_method="gptq"), tiny_args(quant_method="gptq", int6_matrices="5")
    state = tg.build_model(args).state_dict()
    int6 = sorted(t.numel() for k, t in state.items() if tg.quant_kind(k, t, 256) == "int6")
    narrowed = sum(int6[:len(int6) - 5])
    (full, _), (mixed, arithmetic) = tg.estimate_size(state, args), tg.estimate_size(state, mixed_args)
    assert f"int5:{narrowed} " in arithmetic
    assert mixed == pytest.approx(full - narrowed / 8 * tg.COMPRESSION_RATIO["zstd", "search"], abs=1)


def test_a_mixed_run_logs_the_split_and_eval_only_mode_reproduces_it(tiny_env, monkeypatch):
    lines = run_and_reread(monkeypatch, QUANT_METHOD="gptq", INT6_MATRICES="10", GPTQ_SEQUENCES="4", TTT_ENABLED="0")
    one(lines, r"quantize:mixed int6:10 int5:14 \(repeated blocks first, then by trace of H\)")
