"""Builds the stdlib-docstring sample twice and checks format, tokenizer and determinism; builds the
8192-piece sample beside the default one and reads it with the trainer; checks the errors."""
import math
import re

import numpy as np
import pytest
import sentencepiece as spm
import torch

import train_gpt as tg
from conftest import make_sample, tiny_args
from train_gpt import shard_token_count

VOCAB = 1024
MAX_CHARS = 300_000

ms = make_sample()


def shard_tokens(path):
    """A shard's tokens, after train_gpt's checks of its header (magic, version) and size; the header's
    words after magic, version and count must be zero."""
    n = shard_token_count(path)
    assert not np.fromfile(path, dtype="<i4", count=256)[3:].any()
    return np.fromfile(path, dtype="<u2", offset=1024, count=n)


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    dirs = [tmp_path_factory.mktemp(f"sample{i}") for i in range(2)]
    counts = [ms.build_sample(d, vocab_size=VOCAB, max_chars=MAX_CHARS) for d in dirs]
    return dirs, counts


def test_deterministic(builds):
    (a, b), (ca, cb) = builds
    assert ca == cb
    names = ms.output_names(VOCAB)
    assert sorted(p.name for p in a.iterdir()) == sorted(names)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_shards(builds):
    (out, _), (counts, _) = builds
    train = [shard_tokens(out / f"fineweb_train_00000{i}.bin") for i in range(2)]
    val = shard_tokens(out / "fineweb_val_000000.bin")
    assert sum(map(len, train)) == counts["train_tokens"]
    assert len(val) == counts["val_tokens"]
    for tokens in train + [val]:
        assert len(tokens) > 0 and tokens[0] == 1
        assert tokens.max() < VOCAB
    assert int((val == 1).sum()) == counts["val_docs"]
    assert int(sum((t == 1).sum() for t in train)) == counts["train_docs"]
    assert 0.5 < len(train[0]) / len(train[1]) < 2


def test_tokenizer(builds):
    (out, _), _ = builds
    sp = spm.SentencePieceProcessor(model_file=str(out / f"sample_{VOCAB}_bpe.model"))
    assert sp.vocab_size() == VOCAB
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    text = "Return the value — naïve café ✓"
    assert sp.decode(sp.encode(text)) == text  # byte fallback covers unseen characters


@pytest.mark.parametrize("option", ["--vocab", "--vocab-size"])  # --vocab-size: the older name, kept
def test_main_skips_existing_build(builds, capsys, option):
    (out, _), _ = builds
    files = [out / n for n in ms.output_names(VOCAB)]
    before = [f.stat().st_mtime_ns for f in files]
    assert ms.main(["--out", str(out), option, str(VOCAB), "--max-chars", str(MAX_CHARS)]) == 0
    assert capsys.readouterr().out == f"sample already built at {out}\n"
    assert [f.stat().st_mtime_ns for f in files] == before


def test_default_folders_per_vocabulary():
    assert ms.default_out() == ms.default_out(1024) == ms.REPO / "data" / "sample"
    assert ms.default_out(8192) == ms.REPO / "data" / "sample_sp8192"


def test_vocab_8192_sample_beside_the_default_and_read_by_the_trainer(tmp_path, monkeypatch, capsys):
    """`--vocab 8192` writes data/sample_sp8192 and leaves data/sample as it was; train_gpt reads it with
    VOCAB_SIZE=8192 (tokenizer, shards, byte counts) and a tiny model of 8192 pieces scores it."""
    monkeypatch.setattr(ms, "REPO", tmp_path)  # the default folders, under tmp_path
    max_chars = ["--max-chars", "150000"]  # 8192 pieces need about 84,000 characters
    assert ms.main(max_chars) == 0
    default = tmp_path / "data" / "sample"
    before = {p.name: p.read_bytes() for p in default.iterdir()}
    assert sorted(before) == sorted(ms.output_names(1024))
    assert ms.main(["--vocab", "8192", *max_chars]) == 0
    out = tmp_path / "data" / "sample_sp8192"
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"-> {out}")
    assert {p.name: p.read_bytes() for p in default.iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(ms.output_names(8192))

    sp = tg.load_tokenizer(out / "sample_8192_bpe.model", 8192)
    train = np.concatenate([shard_tokens(f) for f in tg.list_shards(out, "train")])
    assert train.max() < 8192 and len(np.unique(train)) > 1024  # more distinct pieces than the default has
    seq_len = 32
    val = tg.load_validation_tokens(tg.list_shards(out, "val"), seq_len).long()
    assert tg.TokenBytes(sp).count(val[:-1], val[1:]).sum() > val.numel()  # pieces of several bytes
    model = tg.build_model(tiny_args(vocab_size="8192")).eval()
    with torch.no_grad():
        loss = model(val[:-1].view(-1, seq_len)[:4], val[1:].view(-1, seq_len)[:4]).item()
    assert abs(loss - math.log(8192)) < 0.5  # an untrained model: about uniform over 8192 pieces


@pytest.mark.parametrize("args, message", [
    (["--max-chars", "1000"], r"only \d+ stdlib docstrings collected \(need 20\); raise --max-chars .*"),
    (["--vocab", "8192", "--max-chars", "50000"],  # too little text for 8192 pieces: the limit is named
     r"--vocab 8192 is more pieces than the [\d,]+ characters of training text give \(at most [\d,]+\): "
     r"use more text \(--max-chars\) or a smaller --vocab"),
    (["--vocab", "300", "--max-chars", "50000"],
     r"--vocab 300 is too few pieces: the training text needs at least [\d,]+ \(one per character, .*\)"),
    (["--vocab", "256"], r"--vocab 256 must be in \(256, 65536\] .*"),
    (["--vocab-size", "65537"], r"--vocab 65537 must be in \(256, 65536\] .*"),
], ids=["tiny corpus", "too many pieces", "too few pieces", "vocab 256", "vocab 65537"])
def test_main_reports_errors_in_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "s"
    assert ms.main(["--out", str(out), *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.fullmatch(f"make_sample: error: {message}", err.strip()), err
    assert not out.exists()  # nothing written


def test_other_sentencepiece_failures_are_one_line():
    message = "INTERNAL: src/trainer_interface.cc(1) [x] something else\nsecond line"
    assert ms.describe_training_error(message, 8192, 1000) == \
        "SentencePiece cannot train 8192 pieces: INTERNAL: src/trainer_interface.cc(1) [x] something else"
