"""LOADER=coprime (recipe §2, a later record's loader): every shard read in passes of coprime
strides over blocks of TRAIN_SEQ_LEN + 1 tokens, each block once per pass; each draw from 8 shards
at first and 64 after COPRIME_RAMP_STEPS, weighted by blocks left; deterministic from SEED; the
same micro-batches for every world size that divides 8; restored exactly after warm-up priming."""
import math

import numpy as np
import pytest
import torch

import train_gpt as tg
from conftest import CPU, run_and_reread, tiny_args, write_shard

SEQ = 16
SPAN = SEQ + 1


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """70 shards of random tokens, 40 to 109 blocks long, each with a few tokens more."""
    root = tmp_path_factory.mktemp("coprime")
    rng = np.random.default_rng(0)
    files = []
    for i in range(70):
        files.append(root / f"fineweb_train_{i:06d}.bin")
        write_shard(files[-1], rng.integers(0, 512, SPAN * (40 + i) + int(rng.integers(SPAN))))
    return files


def loader(files, rank=0, world_size=1, seed=7, ramp=4):
    return tg.CoprimeLoader(files, rank, world_size, CPU, seed, ramp)


def micro_batches(files, world_size, steps, tokens_per_micro=4 * SEQ):
    """{(step, micro-batch index): inputs} over all ranks; rank r's j-th call of a step is micro-batch r + j ws."""
    got = {}
    for rank in range(world_size):
        ld = loader(files, rank, world_size)
        for step in range(steps):
            for j in range(tg.MICRO_BATCHES // world_size):
                x, y = ld.next_batch(tokens_per_micro, SEQ)
                assert torch.equal(x[:, 1:], y[:, :-1])
                got[step, rank + j * world_size] = torch.cat([x, y[:, -1:]], dim=1)
    return got


def test_the_same_micro_batches_for_every_world_size(shards):
    one = micro_batches(shards, 1, 5)
    for world_size in (2, 4, 8):
        other = micro_batches(shards, world_size, 5)
        assert other.keys() == one.keys() and all(torch.equal(other[k], one[k]) for k in one), world_size


def test_deterministic_from_the_seed_and_windows_are_blocks_of_the_shards(shards):
    a, b, c = loader(shards), loader(shards), loader(shards, seed=8)
    first = [a.next_batch(4 * SEQ, SEQ)[0] for _ in range(8)]
    assert all(torch.equal(x, b.next_batch(4 * SEQ, SEQ)[0]) for x in first)
    assert not all(torch.equal(x, c.next_batch(4 * SEQ, SEQ)[0]) for x in first)
    tokens = [tg.read_shard(f) for f in shards]
    for i, (phase, blocks, start, stride, read) in a.passes.items():
        assert math.gcd(stride, blocks) == 1 and 0 <= phase < SPAN and blocks == (len(tokens[i]) - phase) // SPAN


def test_a_pass_reads_every_block_once_and_then_a_new_pass_starts(shards):
    ld = loader(shards[:3])
    seen = ld._draw(1, SPAN)
    while not all(p[4] == p[1] for p in ld.passes.values()):
        seen += ld._draw(1, SPAN)
    assert sorted(seen) == sorted((i, phase + b * SPAN) for i, (phase, blocks, *_) in ld.passes.items() for b in range(blocks))
    ld._draw(1, SPAN)  # every shard read through: each starts a new pass
    assert sum(p[4] for p in ld.passes.values()) == 1


def test_shards_per_draw_ramp_from_8_to_64(shards):
    ld = loader(shards, ramp=4)
    used = []
    for _ in range(6):
        used.append(len({i for i, _ in ld._draw(128, SPAN)}))
    assert used[0] == 8 and used[4] == used[5] == 64 and used == sorted(used)


def test_a_read_through_shard_is_not_drawn_and_too_short_shards_are_one_line(shards, tmp_path):
    ld = loader(shards[:10])
    ld._draw(8, SPAN)
    ld.passes[3][4] = ld.passes[3][1]  # shard 3 read through
    for _ in range(20):
        assert all(i != 3 for i, _ in ld._draw(8, SPAN))
    short = tmp_path / "fineweb_train_000000.bin"
    write_shard(short, np.arange(SEQ))
    with pytest.raises(tg.InputError, match=f"^no training shard holds a sequence of {SPAN} tokens$"):
        loader([short]).next_batch(4 * SEQ, SEQ)


def test_warm_up_priming_restores_the_loader_exactly(shards):
    args = tiny_args(loader="coprime", train_seq_len=str(SEQ), eval_seq_len=str(SEQ), eval_stride="8",
                     train_batch_tokens=str(8 * 4 * SEQ), ttt_chunk_tokens=str(16 * SEQ), warmup_steps="3")
    rt = tg.Runtime(0, 1, CPU)
    model = tg.build_model(args)
    primed, fresh = tg.make_loader(shards, args, rt), tg.make_loader(shards, args, rt)
    assert isinstance(primed, tg.CoprimeLoader)
    tg.warmup_prime(model, tg.build_optimizers(model, args, rt), primed, args, rt)
    for _ in range(10):
        assert torch.equal(primed.next_batch(4 * SEQ, SEQ)[0], fresh.next_batch(4 * SEQ, SEQ)[0])


def test_a_coprime_run_is_read_back_by_eval_only_mode(tiny_env, monkeypatch):
    run_and_reread(monkeypatch, LOADER="coprime", COPRIME_RAMP_STEPS="6", TTT_ENABLED="0")
    with pytest.raises(tg.InputError, match="LOADER must be stream, coprime or shuffled, got 'shuffle'"):
        tiny_args(loader="shuffle")
