"""Data (recipe §2): shard format and its errors, atomic writes, shard listing, the endless token
stream, the distributed loader against a numpy reference, and validation truncation."""
import os

import numpy as np
import pytest
import torch

import train_gpt
from conftest import CPU, write_shard
from train_gpt import (DistributedTokenLoader, InputError, atomic_write, check_token_ids, list_shards,
                       load_validation_tokens, read_shard, shard_token_count)

MAGIC, VERSION = 20240520, 1


def raw_shard(path, tokens, magic=MAGIC, version=VERSION, count=None, extra=b""):
    """A shard written by hand (independent of write_shard)."""
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(tokens) if count is None else count
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes() + extra)
    return path


def write_shards(directory, split, parts) -> list:
    """parts written by write_shard as fineweb_{split}_000000.bin, _000001.bin, ...; their paths."""
    files = [directory / f"fineweb_{split}_{i:06d}.bin" for i in range(len(parts))]
    for path, part in zip(files, parts):
        write_shard(path, part)
    return files


def no_temp_files(directory, keep):
    return sorted(p.name for p in directory.iterdir()) == sorted(keep)


# ----------------------------------------------------------------------------- shard format

def test_write_read_round_trip(tmp_path):
    tokens = np.array([0, 1, 2, 1023, 40000, 65535, 7], dtype=np.int64)
    path = tmp_path / "fineweb_train_000000.bin"
    write_shard(path, tokens)
    data = path.read_bytes()
    assert len(data) == 1024 + 2 * len(tokens)
    header = np.frombuffer(data[:1024], dtype="<i4")
    assert header[0] == MAGIC and header[1] == VERSION and header[2] == len(tokens)
    assert not header[3:].any()
    assert np.array_equal(np.frombuffer(data[1024:], dtype="<u2"), tokens)
    back = read_shard(path)
    assert back.dtype == np.uint16 and np.array_equal(back, tokens)
    assert shard_token_count(path) == len(tokens)
    assert no_temp_files(tmp_path, [path.name])


def test_read_shard_of_hand_written_file(tmp_path):
    tokens = np.arange(300) * 211 % 65536
    path = raw_shard(tmp_path / "s.bin", tokens)
    assert np.array_equal(read_shard(path), tokens)


def test_empty_shard_round_trip(tmp_path):
    path = tmp_path / "e.bin"
    write_shard(path, [])
    assert path.stat().st_size == 1024
    assert shard_token_count(path) == 0 and len(read_shard(path)) == 0


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(magic=20240521), "magic"),
    (dict(magic=0), "magic"),
    (dict(version=2), "version"),
    (dict(count=11), "truncated"),   # header promises more than the file holds
    (dict(count=9), "truncated"),    # file holds more than promised
    (dict(count=-1), None),
    (dict(extra=b"\x00"), None),     # odd size
])
def test_shard_errors_name_the_file(tmp_path, kwargs, pattern):
    path = raw_shard(tmp_path / "fineweb_val_000000.bin", np.arange(10), **kwargs)
    for check in (shard_token_count, read_shard):
        with pytest.raises(InputError, match=pattern) as info:
            check(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize("size", [0, 12, 1023])
def test_file_shorter_than_header(tmp_path, size):
    path = tmp_path / "fineweb_train_000000.bin"
    header = np.zeros(256, dtype="<i4")
    header[:3] = MAGIC, VERSION, 0
    path.write_bytes(header.tobytes()[:size])
    with pytest.raises(InputError) as info:
        shard_token_count(path)
    assert str(path) in str(info.value)


def test_a_header_beyond_2_gib_is_sized_without_overflow(tmp_path):
    """A count above 2**30 tokens: the size it promises is computed in Python ints, not int32."""
    path = raw_shard(tmp_path / "fineweb_train_000000.bin", [], count=1_200_000_000)
    with pytest.raises(InputError, match=r"promises 1200000000 tokens \(2400001024 bytes\)"):
        shard_token_count(path)


@pytest.mark.parametrize("tokens", [[1, 2, -1], [65536], [0, 70000, 3], [[1, 2], [3, 4]]])
def test_write_shard_rejects_bad_tokens(tmp_path, tokens):
    path = tmp_path / "bad.bin"
    with pytest.raises(ValueError):
        write_shard(path, np.array(tokens))
    assert not path.exists() and no_temp_files(tmp_path, [])


# ----------------------------------------------------------------------------- atomic writes

def test_atomic_write_writes_and_overwrites(tmp_path):
    path = tmp_path / "artifact.bin"
    atomic_write({path: b"first"})
    atomic_write({str(path): b"second version", tmp_path / "other.bin": b"other"})
    assert path.read_bytes() == b"second version" and (tmp_path / "other.bin").read_bytes() == b"other"
    assert no_temp_files(tmp_path, ["artifact.bin", "other.bin"])


def test_atomic_write_failure_at_rename_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "artifact.bin"

    def broken_replace(src, dst):
        assert os.path.exists(src) and os.path.getsize(src) == 4  # the data went to a temp file first
        raise OSError("disk gone")

    monkeypatch.setattr(train_gpt.os, "replace", broken_replace)
    with pytest.raises(train_gpt.RunError, match=f"cannot write {path}: disk gone"):
        atomic_write({path: b"data"})
    assert not path.exists()
    assert no_temp_files(tmp_path, [])


def test_atomic_write_failure_mid_write_keeps_old_file(tmp_path):
    path = tmp_path / "artifact.bin"
    atomic_write({path: b"old contents"})

    with pytest.raises(TypeError):
        atomic_write({path: 12345})  # not bytes: the write itself fails
    assert path.read_bytes() == b"old contents"
    assert no_temp_files(tmp_path, ["artifact.bin"])
    new = tmp_path / "new.bin"
    with pytest.raises(TypeError):
        atomic_write({new: b"fine", path: object()})  # the second fails: neither is written
    assert not new.exists() and path.read_bytes() == b"old contents"
    assert no_temp_files(tmp_path, ["artifact.bin"])


# ----------------------------------------------------------------------------- listing shards

def test_list_shards_missing_directory(tmp_path):
    with pytest.raises(InputError) as info:
        list_shards(tmp_path / "nope", "train")
    assert "nope" in str(info.value)


def test_list_shards_no_shards(tmp_path):
    write_shard(tmp_path / "fineweb_val_000000.bin", [1, 2, 3])
    (tmp_path / "train.bin").write_bytes(b"")
    with pytest.raises(InputError) as info:
        list_shards(tmp_path, "train")
    assert "fineweb_train_" in str(info.value)


def test_list_shards_all_empty(tmp_path):
    write_shard(tmp_path / "fineweb_train_000000.bin", [])
    with pytest.raises(InputError):
        list_shards(tmp_path, "train")


def test_list_shards_sorted_and_checked(tmp_path):
    for i in (2, 0, 10, 1):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", [i])
    write_shard(tmp_path / "fineweb_val_000000.bin", [5])
    files = list_shards(tmp_path, "train")
    assert [f.name for f in files] == [f"fineweb_train_{i:06d}.bin" for i in (0, 1, 2, 10)]
    assert [f.name for f in list_shards(str(tmp_path), "val")] == ["fineweb_val_000000.bin"]
    bad = raw_shard(tmp_path / "fineweb_train_000003.bin", [1, 2], version=7)
    with pytest.raises(InputError) as info:
        list_shards(tmp_path, "train")
    assert str(bad) in str(info.value)


# ----------------------------------------------------------------------------- token stream

@pytest.fixture
def three_shards(tmp_path):
    parts = [np.arange(0, 10), np.arange(10, 15), np.arange(15, 22)]
    return write_shards(tmp_path, "train", parts), np.concatenate(parts)


def test_token_stream_crosses_shards_and_wraps(three_shards):
    files, _ = three_shards
    stream = DistributedTokenLoader(files, 0, 1, CPU)
    assert stream.take(4).tolist() == [0, 1, 2, 3]
    assert stream.take(8).tolist() == list(range(4, 12))           # across the first boundary
    assert stream.take(10).tolist() == list(range(12, 22))         # exactly to the end
    assert stream.take(3).tolist() == [0, 1, 2]                    # wrapped
    assert stream.take(25).tolist() == list(range(3, 22)) + list(range(0, 6))  # across two boundaries and the wrap
    assert stream.take(50).tolist() == (list(range(6, 22)) + list(range(22)) + list(range(12)))


def test_token_stream_state_restore(three_shards):
    files, _ = three_shards
    stream = DistributedTokenLoader(files, 0, 1, CPU)
    stream.take(7)
    saved = stream.state()
    first = stream.take(30).tolist()
    stream.restore(saved)
    assert stream.take(30).tolist() == first
    # a state in another shard (after a wrap) restores too
    stream.take(3)
    later = stream.state()
    expected = stream.take(13).tolist()
    fresh = DistributedTokenLoader(files, 0, 1, CPU)
    fresh.restore(later)
    assert fresh.take(13).tolist() == expected
    fresh.restore((0, 0))
    assert fresh.take(5).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("world_size", [1, 2])
def test_distributed_loader_against_numpy(tmp_path, world_size):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 65536, size=n) for n in (37, 5, 60)]
    files = write_shards(tmp_path, "train", parts)
    stream = np.concatenate(parts)
    local_tokens, seq_len, calls = 12, 4, 9
    span = local_tokens + 1
    reference = np.tile(stream, calls * world_size * span // len(stream) + 2)
    loaders = [DistributedTokenLoader(files, r, world_size, CPU) for r in range(world_size)]
    for c in range(calls):
        chunk = reference[c * world_size * span:(c + 1) * world_size * span]
        for r, loader in enumerate(loaders):
            x, y = loader.next_batch(local_tokens, seq_len)
            piece = chunk[r * span:(r + 1) * span]
            assert x.shape == y.shape == (local_tokens // seq_len, seq_len)
            assert x.dtype == y.dtype == torch.int64
            assert np.array_equal(x.numpy(), piece[:-1].reshape(-1, seq_len)), (c, r)
            assert np.array_equal(y.numpy(), piece[1:].reshape(-1, seq_len)), (c, r)


def test_distributed_loader_ranks_take_disjoint_slices(tmp_path):
    path = tmp_path / "fineweb_train_000000.bin"
    write_shard(path, np.arange(1000))
    r0 = DistributedTokenLoader([path], 0, 2, CPU)
    r1 = DistributedTokenLoader([path], 1, 2, CPU)
    x0, y0 = r0.next_batch(8, 4)
    x1, y1 = r1.next_batch(8, 4)
    assert x0.flatten().tolist() == list(range(0, 8)) and y0.flatten().tolist() == list(range(1, 9))
    assert x1.flatten().tolist() == list(range(9, 17)) and y1.flatten().tolist() == list(range(10, 18))
    x0, _ = r0.next_batch(8, 4)
    assert x0.flatten().tolist() == list(range(18, 26))


# ----------------------------------------------------------------------------- validation tokens

@pytest.mark.parametrize("sizes,seq_len", [((10, 11), 4), ((9,), 4), ((5, 4), 8), ((3, 3, 3), 8), ((100,), 33)])
def test_load_validation_tokens_truncates(tmp_path, sizes, seq_len):
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 1024, size=n) for n in sizes]
    files = write_shards(tmp_path, "val", parts)
    tokens = np.concatenate(parts)
    expected_len = (len(tokens) - 1) // seq_len * seq_len + 1
    got = load_validation_tokens(files, seq_len)
    assert got.ndim == 1
    assert len(got) == expected_len
    assert np.array_equal(got.numpy().astype(np.int64), tokens[:expected_len])


@pytest.mark.parametrize("limit,expected", [(0, 97), (50, 49), (48, 49), (47, 33), (1000, 97)])
def test_val_tokens_keeps_a_fixed_prefix(tmp_path, limit, expected):
    """VAL_TOKENS = limit: the first `limit` targets, rounded down to whole sequences (16 here)."""
    tokens = np.random.default_rng(2).integers(0, 1024, size=100)
    files = write_shards(tmp_path, "val", [tokens])
    got = load_validation_tokens(files, 16, limit)
    assert np.array_equal(got.numpy().astype(np.int64), tokens[:expected])


@pytest.mark.parametrize("n,seq_len", [(4, 4), (1, 4), (8, 8), (0, 2)])
def test_load_validation_tokens_too_short(tmp_path, n, seq_len):
    path = tmp_path / "fineweb_val_000000.bin"
    write_shard(path, np.arange(n))
    with pytest.raises(InputError):
        load_validation_tokens([path], seq_len)


def test_sample_data_shards_are_valid(tiny_data):
    train = list_shards(tiny_data, "train")
    val = list_shards(tiny_data, "val")
    assert [f.name for f in train] == ["fineweb_train_000000.bin", "fineweb_train_000001.bin"]
    assert len(val) == 1
    tokens = load_validation_tokens(val, 32)
    assert (len(tokens) - 1) % 32 == 0 and int(tokens[0]) == 1  # documents start with BOS


def test_token_ids_beyond_the_vocabulary_are_a_clear_error(tmp_path):
    """Shards made with another tokenizer: an InputError naming the file and the id, at start."""
    paths = [tmp_path / "fineweb_val_000000.bin", tmp_path / "fineweb_val_000001.bin"]
    write_shard(paths[0], [1, 5, 3])
    write_shard(paths[1], [1, 5, 700, 3])
    check_token_ids(paths, 701, train_gpt.Runtime(0, 1, torch.device("cpu")))
    with pytest.raises(InputError, match=r"^shard .*fineweb_val_000001\.bin holds token id 700, not below VOCAB_SIZE=512"):
        check_token_ids(paths, 512, train_gpt.Runtime(0, 1, torch.device("cpu")))