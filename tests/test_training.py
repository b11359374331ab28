"""Training (recipe §5, §8): the warmdown schedule, warm-up priming that leaves no trace, and the events
of the main loop (late QAT, soft-round, SWA, the late burst, the wallclock stop) under a simulated clock."""
import copy
import re
import warnings
from pathlib import Path

import pytest
import torch

import train_gpt as tg
from conftest import CPU, ONE, make_args, one, run_lines, spawn_gloo, tiny_args


# ----------------------------------------------------------------------------- lr_scale

def test_lr_scale_without_cap_is_linear_over_last_iterations():
    args = make_args(iterations=100, warmdown_iters=20, max_wallclock_seconds=0)
    for step in (0, 1, 50, 79, 80):
        assert tg.lr_scale(step, 12345.0, args) == 1.0
    for step in (81, 85, 90, 99, 100):
        assert tg.lr_scale(step, 0.0, args) == pytest.approx((100 - step) / 20)
    assert tg.lr_scale(90, 0.0, args) == pytest.approx(0.5)
    assert tg.lr_scale(100, 0.0, args) == 0.0
    # elapsed time plays no role without a cap
    assert tg.lr_scale(90, 1e9, args) == tg.lr_scale(90, 0.0, args)


def test_lr_scale_with_cap_uses_measured_step_time():
    args = make_args(iterations=100_000, warmdown_iters=20, max_wallclock_seconds=60)
    # step time 500 ms -> warmdown 10 s; remaining 10 s: exactly at the boundary
    assert tg.lr_scale(100, 50_000.0, args) == pytest.approx(1.0)
    # step time 550 ms -> warmdown 11 s; remaining 5 s
    assert tg.lr_scale(100, 55_000.0, args) == pytest.approx(5_000 / 11_000)
    # step time 400 ms -> warmdown 8 s; remaining 20 s > warmdown: full rate
    assert tg.lr_scale(100, 40_000.0, args) == 1.0
    # step time 590 ms -> warmdown 11.8 s; remaining 1 s
    assert tg.lr_scale(100, 59_000.0, args) == pytest.approx(1_000 / 11_800)
    # past the cap: 0, never negative
    assert tg.lr_scale(100, 61_000.0, args) == 0.0
    # with a cap the iteration count does not matter (without one, step 99,990 of 100,000 would be in warmdown)
    assert tg.lr_scale(99_990, 10_000.0, args) == 1.0
    assert tg.lr_scale(0, 0.0, args) == 1.0


def test_lr_scale_without_warmdown_is_one():
    for cap in (0, 60):
        args = make_args(iterations=100, warmdown_iters=0, max_wallclock_seconds=cap)
        for step, elapsed in ((0, 0.0), (99, 59_000.0), (100, 70_000.0)):
            assert tg.lr_scale(step, elapsed, args) == 1.0


# ----------------------------------------------------------------------------- warm-up priming

def test_warmup_prime_restores_everything(tiny_env, tiny_data):
    args = tg.Hyperparameters(warmup_steps=3)
    rt = ONE
    files = tg.list_shards(tiny_data, "train")

    def fresh():
        model = tg.build_model(args)
        return model, tg.build_optimizers(model, args, ONE), tg.DistributedTokenLoader(files, 0, 1, CPU)

    model, optimizers, loader = fresh()
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt_states = [copy.deepcopy(opt.state_dict()) for opt in optimizers]
    stream = loader.state()

    seen = []  # during priming: did the weights move, did the optimisers hold state, did the stream advance?

    def hook(module, inputs):
        moved = any(not torch.equal(v, weights[k]) for k, v in module.state_dict().items())
        seen.append((moved, [len(opt.state) for opt in optimizers], loader.state()))

    handle = model.register_forward_pre_hook(hook)
    tg.warmup_prime(model, optimizers, loader, args, rt)
    handle.remove()

    assert len(seen) == 3 * rt.grad_accum_steps  # 3 real steps of 8 micro-batches
    assert not seen[0][0] and seen[-1][0], "priming never changed the weights"
    assert all(n > 0 for n in seen[-1][1]), "priming never built optimiser state"
    assert seen[-1][2] != stream

    after = model.state_dict()
    assert after.keys() == weights.keys()
    for k, v in weights.items():
        assert torch.equal(after[k], v), k
    for opt, before in zip(optimizers, opt_states):
        state = opt.state_dict()
        assert state["state"] == {} and len(opt.state) == 0
        assert state["param_groups"] == before["param_groups"]
    assert loader.state() == stream

    # the run continues exactly as if priming never happened
    ref_model, ref_optimizers, ref_loader = fresh()
    local = args.train_batch_tokens // 8
    batches = [loader.next_batch(local, args.train_seq_len) for _ in range(8)]
    ref_batches = [ref_loader.next_batch(local, args.train_seq_len) for _ in range(8)]
    for (x, y), (rx, ry) in zip(batches, ref_batches):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    tg.train_step(model, batches, optimizers, args.grad_clip_norm, rt)
    tg.train_step(ref_model, ref_batches, ref_optimizers, args.grad_clip_norm, rt)
    for (k, v), (_, rv) in zip(model.state_dict().items(), ref_model.state_dict().items()):
        assert torch.equal(v, rv), k


# ----------------------------------------------------------------------------- the main loop, simulated clock

class FakeClock:
    """Advances DT seconds per call (a binary fraction, so every difference is exact)."""

    def __init__(self, dt: float):
        self.dt, self.calls = dt, 0

    def __call__(self) -> float:
        self.calls += 1
        return self.calls * self.dt


CAP_S, DT, WARMDOWN, SWA_EVERY, BURST = 7.45, 0.125, 120, 5, 10


def expected_scale(step: int, elapsed_ms: float) -> float:
    """recipe §5 with a cap: step time = elapsed/step; warmdown = WARMDOWN x step time;
    scale = remaining/warmdown once remaining <= warmdown, else 1."""
    if step == 0:
        return 1.0
    warmdown_ms = WARMDOWN * elapsed_ms / step
    remaining_ms = max(CAP_S * 1000 - elapsed_ms, 0.0)
    return remaining_ms / warmdown_ms if remaining_ms <= warmdown_ms else 1.0


def test_main_loop_events_under_simulated_clock(tiny_env, monkeypatch):
    for key, value in dict(MAX_WALLCLOCK_SECONDS=str(CAP_S), ITERATIONS="1000", WARMDOWN_ITERS=str(WARMDOWN),
                           TRAIN_LOG_EVERY="1", VAL_LOSS_EVERY="0", SWA_EVERY=str(SWA_EVERY),
                           TTT_BURST_STEPS=str(BURST), TTT_BURST_EPOCHS="1", WEIGHT_AVG="swa").items():
        monkeypatch.setenv(key, value)
    for key in ("LATE_QAT_THRESHOLD", "SOFT_ROUND_THRESHOLD", "SOFT_ROUND_TAU", "SWA_TRIGGER", "TTT_BURST_TRIGGER"):
        monkeypatch.delenv(key, raising=False)  # the record's thresholds: 0.15, 0.02, 0.1, 0.2, 0.2
    clock = FakeClock(DT)
    tg.main(clock=clock)
    lines = run_lines(Path("logs/tiny.txt"))

    times = {0: 0.0}
    for line in lines:
        m = re.fullmatch(r"step:(\d+)/1000 train_loss:([\d.]+) train_time:(\d+)ms step_avg:[\d.]+ms", line)
        if m:
            times[int(m[1])] = float(m[3])
    last = max(times)
    assert sorted(times) == list(range(last + 1)), "a step's log line is missing"
    assert all(times[k] == pytest.approx(1000 * DT * k) for k in times)  # one clock call per step

    # the stop: the first step whose training time reaches the cap; no step after it
    stop = min(k for k, t in times.items() if t >= 1000 * CAP_S)
    assert stop == last
    m = one(lines, r"stopping_early: wallclock_cap train_time:(\d+)ms step:(\d+)/1000")
    assert int(m[2]) == stop and float(m[1]) >= 1000 * CAP_S

    scales = {k: expected_scale(k, times[k]) for k in range(stop)}  # the scale used by loop step k

    qat_step = min(k for k, s in scales.items() if s < 0.15)
    m = one(lines, r"late_qat:enabled step:(\d+) scale:([\d.]+)")
    assert int(m[1]) == qat_step and float(m[2]) == pytest.approx(scales[qat_step], abs=1e-4)

    soft_step = min(k for k, s in scales.items() if s < 0.02)
    m = one(lines, r"soft_round:enabled step:(\d+) scale:([\d.]+) tau:([\d.]+)")
    assert int(m[1]) == soft_step and float(m[2]) == pytest.approx(scales[soft_step], abs=1e-4)
    assert float(m[3]) == 0.1

    snapshots = [s for s in range(1, stop + 1) if s % SWA_EVERY == 0 and scales[s - 1] < 0.2]
    assert int(one(lines, r"swa:start step:(\d+)")[1]) == snapshots[0]
    assert int(one(lines, r"weight_avg:swa snapshots:(\d+)")[1]) == len(snapshots)

    late = [k for k, s in scales.items() if s < 0.2][-BURST:]
    m = one(lines, r"ttt_burst:start steps:(\d+) epochs:(\d+) first_step:(\d+) last_step:(\d+)")
    assert (int(m[1]), int(m[2]), int(m[3]), int(m[4])) == (BURST, 1, late[0], late[-1])
    assert late == list(range(late[0], late[-1] + 1))
    one(lines, r"ttt_burst:done")

    # the numbers above were chosen so that every event happens, in this order
    assert (stop, qat_step, soft_step, snapshots, late[0]) == (60, 42, 58, [40, 45, 50, 55, 60], 50)
    assert lines.index(next(line for line in lines if line.startswith("late_qat:"))) < \
        lines.index(next(line for line in lines if line.startswith("soft_round:")))

    one(lines, r"step:60/1000 val_loss:[\d.]+ val_bpb:[\d.]+ train_time:\d+ms step_avg:[\d.]+ms")
    one(lines, r"DIAGNOSTIC post_swa val_loss:[\d.]+ val_bpb:[\d.]+ eval_time:\d+ms")
    assert not any(line.startswith("DIAGNOSTIC post_ema") for line in lines)


def test_main_default_ema_run_log(tiny_env, monkeypatch):
    monkeypatch.setenv("ITERATIONS", "4")
    monkeypatch.setenv("WARMDOWN_ITERS", "2")
    monkeypatch.setenv("VAL_LOSS_EVERY", "2")
    monkeypatch.delenv("WEIGHT_AVG", raising=False)
    tg.main()
    text = Path("logs/tiny.txt").read_text(encoding="utf-8")
    assert text.startswith(Path(tg.__file__).read_text(encoding="utf-8"))
    lines = run_lines(Path("logs/tiny.txt"))

    n_params = sum(p.numel() for p in tg.build_model(tg.Hyperparameters()).parameters())
    assert int(one(lines, r"model_params:(\d+)")[1]) == n_params
    one(lines, r"world_size:1 grad_accum_steps:8")
    for step in (0, 2, 4):
        one(lines, rf"step:{step}/4 val_loss:[\d.]+ val_bpb:[\d.]+ train_time:\d+ms step_avg:[\d.]+ms")
    for step in (1, 2, 3, 4):
        one(lines, rf"step:{step}/4 train_loss:[\d.]+ train_time:\d+ms step_avg:[\d.]+ms")
    assert not any(line.startswith("stopping_early") for line in lines)
    one(lines, r"weight_avg:ema decay:0\.5")
    one(lines, r"DIAGNOSTIC post_ema val_loss:[\d.]+ val_bpb:[\d.]+ eval_time:\d+ms")


