"""COMPRESSOR=zstd|brotli (recipe §6): brotli quality 11 over the byte-shuffled container behind a
'BSHF' header; loading tells the two apart by the header, so zstd artifacts still load; brotli is
imported only where it is used, and its absence is one line, at the start of a run."""
import sys

import brotli
import pytest
import torch
import zstandard

import train_gpt as tg
from conftest import one, run_and_reread, run_lines, tiny_args


def container(name: str) -> dict:
    g = torch.Generator().manual_seed(0)
    return tg.quantize_state_dict({name: torch.randn(64, 40, generator=g), "tiny": torch.randn(7, generator=g)}, 256)


@pytest.mark.parametrize("raw", [b"", b"a", b"ab", b"abcdefg", bytes(range(256)) * 3 + b"x"])
def test_byte_shuffle_puts_even_positions_first_and_undoes_at_either_parity(raw):
    shuffled = tg.byte_shuffle(raw)
    assert shuffled == raw[0::2] + raw[1::2] and tg.byte_shuffle(shuffled, undo=True) == raw


def test_brotli_artifact_is_the_shuffled_container_and_loads_back(tmp_path):
    c = container("blocks.0.attn.c_q.weight")
    raw, blob = tg.serialize(c), tg.compress_artifact(c, "brotli")
    assert blob[:4] == b"BSHF" and brotli.decompress(blob[4:]) == raw[0::2] + raw[1::2]
    path = tmp_path / "a.ptz"
    path.write_bytes(blob)
    loaded = tg.load_artifact(path)
    assert loaded["m"] == c["m"] and all(torch.equal(loaded["w"][k], v) for k, v in c["w"].items())
    assert tg.artifact_compressor(path) == "brotli"
    path.write_bytes(tg.compress_artifact(c))  # the default is the record's zstd, still loaded
    assert zstandard.ZstdDecompressor().decompress(path.read_bytes()) == raw
    assert tg.load_artifact(path)["m"] == c["m"] and tg.artifact_compressor(path) == "zstd"


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_byte_shuffle_of_any_stride_undoes(stride):
    raw = bytes(range(256)) * 2 + b"xyz"
    assert tg.byte_shuffle(tg.byte_shuffle(raw, stride=stride), undo=True, stride=stride) == raw
    assert tg.byte_shuffle(raw, stride=stride)[:3] == raw[0:3 * stride:stride]


def test_an_artifact_in_the_later_records_brotli_framing_loads(tmp_path):
    """Their framing: 'BSHF' and a stride byte inside the brotli stream, then the shuffled container. Eval-only mode
    reads it as well as ours ('BSHF' outside) and zstd; the size lines call it brotli."""
    c = container("blocks.0.attn.c_q.weight")
    raw = tg.serialize(c)
    path = tmp_path / "record.ptz"
    path.write_bytes(brotli.compress(b"BSHF" + bytes([2]) + tg.byte_shuffle(raw), quality=11))
    loaded = tg.load_artifact(path)
    assert loaded["m"] == c["m"] and all(torch.equal(loaded["w"][k], v) for k, v in c["w"].items())
    assert tg.artifact_compressor(path) == "brotli"
    path.write_bytes(b"neither zstd nor brotli")
    with pytest.raises(tg.InputError, match=r"is not a complete zstd stream"):
        tg.load_artifact(path)


def test_a_truncated_brotli_artifact_is_one_line(tmp_path):
    path = tmp_path / "a.ptz"
    blob = tg.compress_artifact(container("blocks.0.attn.c_q.weight"), "brotli")
    path.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(tg.InputError, match=r"^artifact .*a\.ptz is not a complete brotli stream \(truncated or corrupt"):
        tg.load_artifact(path)


def test_without_brotli_asking_for_it_is_one_line_before_training(tiny_env, monkeypatch, tmp_path):
    blob = tg.compress_artifact(container("blocks.0.attn.c_q.weight"), "brotli")
    monkeypatch.setitem(sys.modules, "brotli", None)  # import brotli now raises ImportError
    with pytest.raises(tg.InputError, match=r"^COMPRESSOR=brotli needs the brotli package: pip install brotli$"):
        tg.compress_artifact(container("x.attn.w"), "brotli")
    (tmp_path / "b.ptz").write_bytes(blob)
    with pytest.raises(tg.InputError, match=r"^artifact \S+b\.ptz is brotli-compressed: loading it needs the brotli package"):
        tg.load_artifact(tmp_path / "b.ptz")
    monkeypatch.setenv("COMPRESSOR", "brotli")
    with pytest.raises(tg.InputError, match="COMPRESSOR=brotli needs the brotli package"):
        tg.main()
    lines = run_lines("logs/tiny.txt")
    assert lines[-1].startswith("ERROR: COMPRESSOR=brotli") and not any(line.startswith("step:") for line in lines)


def test_a_brotli_run_logs_its_size_and_eval_only_mode_reproduces_it(tiny_env, monkeypatch):
    lines = run_and_reread(monkeypatch, COMPRESSOR="brotli", TTT_ENABLED="0")
    n = int(one(lines, r"Serialized model int6\+brotli: (\d+) bytes")[1])
    assert n == len(open("final_model.int6.ptz", "rb").read()) and open("final_model.int6.ptz", "rb").read(4) == b"BSHF"
    one(lines, r"Total submission size int6\+brotli: \d+ bytes")


def test_compressor_setting_is_checked():
    with pytest.raises(tg.InputError, match="COMPRESSOR must be zstd or brotli, got 'lzma'"):
        tiny_args(compressor="lzma")
