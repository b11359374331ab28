"""Build a small, deterministic sample dataset in the challenge format.

The corpus is the docstrings of the Python standard library's own source files,
read with `ast` (nothing is imported), so every machine has it and the same
Python version always yields byte-identical output. Every 10th document goes to
validation. A SentencePiece BPE tokenizer is trained on the train documents,
and each document is written as [BOS=1] + its tokens.

Layout written to OUT (default: <repo>/data/sample for the 1024-piece default,
<repo>/data/sample_sp<V> for another vocabulary, so that two samples never mix):
    sample_{V}_bpe.model        SentencePiece model (<pad>=0, <s>=1, </s>=2, <unk>=3)
    fineweb_train_000000.bin    train tokens, first half (split at a document start)
    fineweb_train_000001.bin    train tokens, second half
    fineweb_val_000000.bin      validation tokens
Each .bin is 256 little-endian int32 (magic 20240520, version 1, token count N,
then zeros) followed by N little-endian uint16 tokens.

The default corpus (--max-chars 3,000,000; the docstrings of Python 3.11's standard
library come to 1.17M characters) trains up to 38,311 pieces, so `--vocab 8192` (the
vocabulary of the SP8192 records) builds data/sample_sp8192 with no other option;
8192 pieces need about 84,000 characters. A vocabulary the corpus cannot train is
one error line saying how many pieces it can.

Usage: python data/make_sample.py [--out DIR] [--vocab V] [--max-chars N] [--force]
       (--vocab-size V is the same as --vocab V)
"""

import argparse
import ast
import io
import os
import re
import sys
import sysconfig
import warnings
from pathlib import Path

import numpy as np
import sentencepiece as spm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from train_gpt import SHARD_HEADER_BYTES, SHARD_MAGIC, SHARD_VERSION, RunError, atomic_write  # noqa: E402

VOCAB_SIZE = 1024
MAX_VOCAB = 65536  # shards hold uint16 token ids
SKIP_DIRS = {"site-packages", "test", "tests", "idlelib", "lib2to3"}
DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
MIN_DOC_CHARS = 200
VAL_EVERY = 10
BOS = 1


# SentencePiece's refusals to train a vocabulary, which name the limit
TOO_MANY_PIECES = re.compile(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)")
TOO_FEW_PIECES = re.compile(r"Vocabulary size is smaller than required_chars\. \d+ vs (\d+)")


class SampleError(Exception):
    """An expected failure, reported as one line without a traceback."""


def default_out(vocab_size=VOCAB_SIZE):
    """data/sample for the default vocabulary, data/sample_sp<V> for another: two vocabularies'
    shards cannot share a folder."""
    return REPO / "data" / ("sample" if vocab_size == VOCAB_SIZE else f"sample_sp{vocab_size}")


def shard_bytes(tokens) -> bytes:
    """A shard in the challenge format that train_gpt.py reads: a header of 256 int32 (magic, version,
    token count), then the tokens as uint16."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or (tokens.size and (tokens.min() < 0 or tokens.max() > 65535)):
        raise ValueError("tokens must be a 1-D sequence of integers in [0, 65535]")
    header = np.zeros(SHARD_HEADER_BYTES // 4, dtype="<i4")
    header[:3] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    return header.tobytes() + tokens.astype("<u2").tobytes()


def output_names(vocab_size):
    return [f"sample_{vocab_size}_bpe.model", "fineweb_train_000000.bin",
            "fineweb_train_000001.bin", "fineweb_val_000000.bin"]


def source_files(root, skip=SKIP_DIRS):
    """The .py files under root in sorted path order, directories named in skip left out."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield Path(dirpath, name)


def _docstrings(path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. invalid escape sequences
            tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return
    for node in ast.walk(tree):
        if isinstance(node, DOC_NODES):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def _normalise(text):
    """Collapse whitespace inside paragraphs; keep paragraphs apart with one blank line."""
    paragraphs = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in paragraphs if p)


def collect_documents(max_chars=3_000_000):
    """Unique stdlib docstrings of >= MIN_DOC_CHARS, in sorted file order, up to max_chars in total."""
    docs, seen, total = [], set(), 0
    for path in source_files(sysconfig.get_paths()["stdlib"]):
        for raw in _docstrings(path):
            doc = _normalise(raw)
            if len(doc) < MIN_DOC_CHARS or doc in seen:
                continue
            if total + len(doc) > max_chars:
                return docs
            docs.append(doc)
            seen.add(doc)
            total += len(doc)
    return docs


def train_tokenizer(docs, vocab_size):
    """A SentencePiece BPE model (bytes) trained on docs, byte fallback on, deterministic. A
    vocabulary the text cannot train is a SampleError saying the limit."""
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(docs), model_writer=model,
            model_type="bpe", vocab_size=vocab_size,
            pad_id=0, bos_id=1, eos_id=2, unk_id=3,
            byte_fallback=True, character_coverage=1.0, num_threads=2,
            input_sentence_size=0, shuffle_input_sentence=False,
            max_sentence_length=max(len(d.encode()) for d in docs),
            minloglevel=2,
        )
    except RuntimeError as e:
        raise SampleError(describe_training_error(str(e), vocab_size, sum(map(len, docs)))) from None
    return model.getvalue()


def describe_training_error(message, vocab_size, chars):
    """One line for SentencePiece's refusal to train vocab_size pieces on chars characters."""
    if m := TOO_MANY_PIECES.search(message):
        return (f"--vocab {vocab_size} is more pieces than the {chars:,} characters of training text give "
                f"(at most {int(m[1]):,}): use more text (--max-chars) or a smaller --vocab")
    if m := TOO_FEW_PIECES.search(message):
        return (f"--vocab {vocab_size} is too few pieces: the training text needs at least {int(m[1]):,} "
                "(one per character, 256 byte pieces and 4 special ones)")
    return f"SentencePiece cannot train {vocab_size} pieces: {message.strip().splitlines()[0]}"


def encode(sp, docs):
    """The documents' tokens, each document as [BOS] + its tokens, as little-endian uint16."""
    return np.array([t for doc in docs for t in [BOS] + sp.encode(doc)], dtype="<u2")


def build_sample(out_dir, vocab_size=VOCAB_SIZE, max_chars=3_000_000):
    """Build the sample into out_dir (overwriting) and return document and token counts."""
    docs = collect_documents(max_chars)
    if len(docs) < 2 * VAL_EVERY:
        raise SampleError(f"only {len(docs)} stdlib docstrings collected (need {2 * VAL_EVERY}); "
                          "raise --max-chars or check the Python installation")
    val_docs = docs[::VAL_EVERY]
    train_docs = [d for i, d in enumerate(docs) if i % VAL_EVERY]
    model = train_tokenizer(train_docs, vocab_size)
    sp = spm.SentencePieceProcessor(model_proto=model)
    train, val = encode(sp, train_docs), encode(sp, val_docs)
    starts = np.flatnonzero(train == BOS)
    cut = starts[np.argmin(np.abs(starts - len(train) / 2))]  # > 0: there are >= 2 train docs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = output_names(vocab_size)
    shards = {out / name: shard_bytes(tokens) for name, tokens in zip(names[1:], (train[:cut], train[cut:], val))}
    atomic_write({out / names[0]: model, **shards})  # all four files or none
    return {"train_docs": len(train_docs), "val_docs": len(val_docs),
            "train_tokens": len(train), "val_tokens": len(val)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        help="output directory (default data/sample, or data/sample_sp<V> for another vocabulary)")
    parser.add_argument("--vocab", "--vocab-size", dest="vocab", type=int, default=VOCAB_SIZE,
                        help=f"SentencePiece pieces (default {VOCAB_SIZE})")
    parser.add_argument("--max-chars", type=int, default=3_000_000, help="corpus size cap")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args(argv)
    out = args.out or default_out(args.vocab)
    if not 256 < args.vocab <= MAX_VOCAB:
        print(f"make_sample: error: --vocab {args.vocab} must be in (256, {MAX_VOCAB}] (byte fallback needs 256 "
              "pieces; shards hold uint16)", file=sys.stderr)
        return 1
    if not args.force and all((out / n).is_file() for n in output_names(args.vocab)):
        print(f"sample already built at {out}")
        return 0
    try:
        c = build_sample(out, args.vocab, args.max_chars)
    except (SampleError, RunError, OSError, RuntimeError) as e:
        message = str(e).strip().splitlines() or [type(e).__name__]
        print(f"make_sample: error: {message[0]}", file=sys.stderr)
        return 1
    print(f"docs train={c['train_docs']} val={c['val_docs']}, tokens train={c['train_tokens']} "
          f"val={c['val_tokens']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
