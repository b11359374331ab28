"""Evaluation (recipe §7, §9): the sliding-window enumeration scores every target exactly once; standard and
sliding evaluation equal brute-force computations; 2 gloo ranks give the results of one process;
score-first TTT is legal (a chunk's score depends only on earlier chunks); the whole pipeline ends
with final_ttt_exact, and eval-only mode reproduces it from the artifact."""
import copy
import math
import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import train_gpt as tg
from conftest import (CHUNK as K, CPU, ONE, SEQ_LEN as L, STRIDE as S, TINY_VOCAB, index_of, load_inputs, run_lines,
                      scoring_model, spawn_gloo, tiny_args)


# ----------------------------------------------------------------------------- the enumeration

@pytest.mark.parametrize("n,seq_len,stride", [(32, 32, 8), (33, 32, 8), (39, 32, 8), (40, 32, 8), (100, 32, 8),
                                              (128, 32, 32), (70, 32, 1), (2048 * 3 + 64 * 5 + 17, 2048, 64)])
def test_sliding_windows_score_every_target_exactly_once(n, seq_len, stride):
    starts, score_from = tg.sliding_windows(n, seq_len, stride)
    starts, score_from = starts.tolist(), score_from.tolist()
    scored = [s + j for s, f in zip(starts, score_from) for j in range(f, seq_len)]
    assert sorted(scored) == list(range(n)) and len(scored) == n  # every target once
    assert starts[0] == 0 and score_from[0] == 0  # the first window scores all its targets
    for k, (start, first) in enumerate(zip(starts, score_from)):
        assert 0 <= start and start + seq_len <= n  # full length, inside the targets
        if k:
            assert 1 <= seq_len - first <= stride  # its last <= stride targets
            end = min(seq_len + k * stride, n)  # windows every stride tokens, the last one ends at n
            assert start + seq_len == end
    assert starts[-1] + seq_len == n
    assert len(starts) == 1 + math.ceil((n - seq_len) / stride)


# ----------------------------------------------------------------------------- brute force

def window_start(t: int, n: int) -> int:
    """The window the scheme assigns to target t: [0, L) for the first L targets; otherwise the window
    ending at the end of t's stride block (the last one at n)."""
    if t < L:
        return 0
    return min(L + S * math.ceil((t + 1 - L) / S), n) - L


def brute_force_nll(model, val, window_of) -> float:
    """Sum over every target t of its NLL in the window window_of(t), one window at a time."""
    n = val.numel() - 1
    cache, total = {}, 0.0
    with torch.no_grad():
        for t in range(n):
            start = window_of(t)
            if start not in cache:
                x = val[start:start + L].long()[None]
                cache[start] = torch.log_softmax(model.forward_logits(x)[0].float(), dim=-1)
            total += -cache[start][t - start, int(val[t + 1])].double().item()
    return total


def count_scored(monkeypatch):
    counted = {"targets": 0}
    add = tg.BpbMeter.add

    def counting_add(self, nll, prev, target):
        counted["targets"] += nll.numel()
        return add(self, nll, prev, target)
    monkeypatch.setattr(tg.BpbMeter, "add", counting_add)
    return counted


def test_sliding_evaluation_equals_brute_force(tiny_data, monkeypatch):
    n = 40 * L - 3  # not a multiple of the stride: a short last window
    val, token_bytes = load_inputs(tiny_data, n)
    model = scoring_model()
    args = tiny_args(val_batch_size=5 * L)  # several batches of windows
    counted = count_scored(monkeypatch)
    val_loss, val_bpb = tg.evaluate(model, val, token_bytes, args, ONE, S)
    assert counted["targets"] == n

    expected = brute_force_nll(model, val, lambda t: window_start(t, n))
    assert val_loss * n == pytest.approx(expected, rel=1e-4)
    n_bytes = token_bytes.count(val[:-1].long(), val[1:].long()).sum().item()
    assert val_bpb == pytest.approx(expected / math.log(2) / n_bytes, rel=1e-4)
    # the check discriminates: scoring with less context gives another total
    other = brute_force_nll(model, val, lambda t: t // L * L if t < n // L * L else n - L)
    assert abs(other - expected) > 1e-3 * expected


def test_standard_evaluation_equals_brute_force(tiny_data, monkeypatch):
    n = 40 * L
    val, token_bytes = load_inputs(tiny_data, n)
    model = scoring_model()
    counted = count_scored(monkeypatch)
    val_loss, val_bpb = tg.evaluate(model, val, token_bytes, tiny_args(val_batch_size=3 * L), ONE)
    assert counted["targets"] == n
    expected = brute_force_nll(model, val, lambda t: t // L * L)
    assert val_loss * n == pytest.approx(expected, rel=1e-4)
    n_bytes = token_bytes.count(val[:-1].long(), val[1:].long()).sum().item()
    assert val_bpb == pytest.approx(expected / math.log(2) / n_bytes, rel=1e-4)


# ----------------------------------------------------------------------------- TTT

TTT_ARGS = dict(ttt_epochs=1, ttt_lr=0.05, val_batch_size=4 * L)


def run_ttt(model, val, token_bytes, rt=ONE, **kw):
    return tg.evaluate_ttt(copy.deepcopy(model), val, token_bytes, tiny_args(**dict(TTT_ARGS, **kw)), rt)


def record_scoring(monkeypatch) -> list:
    """Wraps score_windows: for each call (one per TTT chunk), the weights it scores with, the first
    target it scores and the last validation token it reads."""
    calls, score_windows = [], tg.score_windows

    def recording(model, val_tokens, starts, score_from, seq_len, *rest):
        weights = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
        calls.append((weights, int((starts + score_from).min()), int((starts + seq_len).max())))
        return score_windows(model, val_tokens, starts, score_from, seq_len, *rest)
    monkeypatch.setattr(tg, "score_windows", recording)
    return calls


def test_ttt_score_of_a_chunk_depends_only_on_earlier_chunks(tiny_data, monkeypatch):
    n_chunks, k = 5, 2
    val, token_bytes = load_inputs(tiny_data, n_chunks * K)
    changed = val.clone()
    targets = slice(k * K + 1, (k + 1) * K + 1)  # the targets of chunk k: target t is val_tokens[t + 1]
    changed[targets] = (val[targets] + 1 + torch.arange(K, dtype=val.dtype) % 7) % TINY_VOCAB
    model = scoring_model()
    initial = torch.cat([p.detach().flatten() for p in model.parameters()])

    calls = record_scoring(monkeypatch)
    *_, sums = run_ttt(model, val, token_bytes)
    *_, sums_changed = run_ttt(model, changed, token_bytes)
    assert sums.shape == (n_chunks, 3) and sums.dtype == torch.float64
    assert sums[:, 1].tolist() == [K] * n_chunks
    assert torch.equal(sums[:k], sums_changed[:k])  # bit-identical before chunk k
    assert sums[k, 0] != sums_changed[k, 0]  # chunk k itself is scored on the new tokens
    assert (sums[k + 1:, 0] != sums_changed[k + 1:, 0]).all()  # later chunks differ too

    # why: chunk c is scored reading only val_tokens[: (c + 1) K + 1], with weights trained on chunks < c
    assert len(calls) == 2 * n_chunks
    for c, ((weights, first, last), (weights_changed, *_)) in enumerate(zip(calls[:n_chunks], calls[n_chunks:])):
        assert first == c * K and last == (c + 1) * K, c
        if c == 0:
            assert torch.equal(weights, initial)  # scored before any training
        else:
            assert not torch.equal(weights, calls[c - 1][0]), c  # the training visibly changed the weights
        if c <= k:
            assert torch.equal(weights, weights_changed), f"chunk {c} scored with weights that saw chunk {k}"
        else:
            assert not torch.equal(weights, weights_changed), c  # training saw the changed tokens


def test_ttt_without_training_is_the_sliding_evaluation(tiny_data, monkeypatch):
    n = 5 * K - L  # a shorter last chunk
    val, token_bytes = load_inputs(tiny_data, n)
    model = scoring_model()
    args = tiny_args(**TTT_ARGS)
    sliding = tg.evaluate(model, val, token_bytes, args, ONE, S)
    counted = count_scored(monkeypatch)
    val_loss, val_bpb, sums = run_ttt(model, val, token_bytes, ttt_epochs=0)
    assert counted["targets"] == n
    assert sums[:, 1].tolist() == [K, K, K, K, K - L]
    assert (val_loss, val_bpb) == sliding  # same windows, same weights: exactly equal
    trained = run_ttt(model, val, token_bytes)
    assert abs(trained[1] - sliding[1]) > 1e-4  # with training the score moves
    assert trained[2][:, 1].tolist() == [K, K, K, K, K - L]


# ----------------------------------------------------------------------------- 2 gloo ranks

def all_evaluations(tiny_data, rt):
    val, token_bytes = load_inputs(tiny_data, 4 * K)
    model = scoring_model()
    args = tiny_args(**TTT_ARGS)
    return {"standard": tg.evaluate(model, val, token_bytes, args, rt),
            "sliding": tg.evaluate(model, val, token_bytes, args, rt, S),
            # no clipping, so that the size of the averaged gradient matters, not only its direction
            "ttt": run_ttt(model, val, token_bytes, rt, ttt_grad_clip=0, ttt_lr=0.01)[:2]}


def _ranked_evaluations(rank, world_size, tiny_data):
    return all_evaluations(tiny_data, tg.Runtime(rank, world_size, CPU))


def test_two_gloo_ranks_match_one_process(tiny_data):
    assert not dist.is_initialized()
    single = all_evaluations(tiny_data, ONE)  # also imports what the first optimiser step needs, before forking
    tolerance = {"standard": 1e-9, "sliding": 1e-9, "ttt": 1e-5}
    for rank, ranked in enumerate(spawn_gloo(_ranked_evaluations, 2, tiny_data)):
        for name, (loss, bpb) in single.items():
            assert ranked[name][0] == pytest.approx(loss, rel=tolerance[name], abs=0), (rank, name)
            assert ranked[name][1] == pytest.approx(bpb, rel=tolerance[name], abs=0), (rank, name)
    assert single["ttt"] != single["sliding"]


# ----------------------------------------------------------------------------- the whole pipeline

EXACT = r"val_loss:(\d+\.\d{8}) val_bpb:(\d+\.\d{8})"
NAMES = ("final_int6_roundtrip", "final_int6_sliding_window", "final_ttt")


def test_pipeline_ends_with_final_ttt_and_eval_only_reproduces_it(tiny_env, tiny_data, monkeypatch):
    tg.main()
    lines = run_lines(Path("logs/tiny.txt"))
    assert re.fullmatch(r"final_ttt_exact " + EXACT, lines[-1]), lines[-1]
    positions, exact = [], {}
    for name in NAMES:
        i, m = index_of(lines, rf"{name} val_loss:(\d+\.\d{{4}}) val_bpb:(\d+\.\d{{4}}) eval_time:\d+ms")
        j, e = index_of(lines, rf"{name}_exact " + EXACT)
        assert j == i + 1
        assert (float(m[1]), float(m[2])) == (round(float(e[1]), 4), round(float(e[2]), 4))
        positions += [i, j]
        exact[name] = lines[j]
    assert positions == sorted(positions) and positions[-1] == len(lines) - 1
    n_targets = int(index_of(lines, r"val_tokens:(\d+) .*")[1][1])
    n_chunks = math.ceil(n_targets / K)
    progress = [int(m[1]) for m in (re.fullmatch(rf"ttt:chunk (\d+)/{n_chunks} running_val_bpb:[\d.]+ elapsed:[\d.]+s", line)
                                    for line in lines[positions[3]:positions[4]]) if m]
    assert progress == [c for c in range(1, n_chunks + 1) if c % 10 == 0 or c == n_chunks]
    assert any("train_loss" in line for line in lines)

    artifact = Path("final_model.int6.ptz")
    blob, raw_mtime = artifact.read_bytes(), Path("final_model.pt").stat().st_mtime_ns
    monkeypatch.setenv("EVAL_ARTIFACT", str(artifact))
    monkeypatch.setenv("RUN_ID", "eval_only")
    tg.main()
    again = run_lines(Path("logs/eval_only.txt"))
    for name in NAMES:
        assert again[index_of(again, rf"{name}_exact " + EXACT)[0]] == exact[name]
    assert re.fullmatch(r"final_ttt_exact " + EXACT, again[-1])
    assert not any("train_loss" in line or line.startswith("step:") for line in again)
    index_of(again, r"eval_artifact:final_model\.int6\.ptz")
    assert artifact.read_bytes() == blob and Path("final_model.pt").stat().st_mtime_ns == raw_mtime

    monkeypatch.setenv("EVAL_ARTIFACT", "no_such_model.int6.ptz")
    monkeypatch.setenv("RUN_ID", "missing")
    with pytest.raises(tg.InputError, match="no_such_model"):
        tg.main()
