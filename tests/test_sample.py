"""Builds the stdlib-docstring sample twice and checks format, tokenizer and determinism."""

import numpy as np
import pytest
import sentencepiece as spm

from conftest import make_sample
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


def test_main_skips_existing_build(builds, capsys):
    (out, _), _ = builds
    files = [out / n for n in ms.output_names(VOCAB)]
    before = [f.stat().st_mtime_ns for f in files]
    assert ms.main(["--out", str(out), "--vocab-size", str(VOCAB), "--max-chars", str(MAX_CHARS)]) == 0
    assert "already built" in capsys.readouterr().out
    assert [f.stat().st_mtime_ns for f in files] == before


def test_main_reports_errors_in_one_line(tmp_path, capsys):
    assert ms.main(["--out", str(tmp_path / "s"), "--max-chars", "1000"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("make_sample: error:") and err.count("\n") == 1
