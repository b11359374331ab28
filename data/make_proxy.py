"""Build the CPU proxy corpus: a corpus large enough to rank two settings of the recipe on a CPU.

The text is the Python standard library's own source files (code, comments and docstrings, its
test suites included) and the documentation it ships (pydoc_data's topics), read as text (nothing
is imported), so every Python installation has it and the same installation always yields
byte-identical output. FineWeb is a stream of short, shuffled web pages; to look like it, each file
is cut into documents at blank lines (whole paragraphs, at most MAX_DOC_CHARS each, a few thousand
tokens), and the documents are put in a fixed, seeded, shuffled order. One file in 25 (chosen by
the same seed) is held out for validation, all its documents with it, so that no held-out text has
a neighbour from its own file in training. A SentencePiece BPE of --vocab pieces is trained on
paragraphs of the training documents, and each document is written as [BOS=1] + its tokens, in the
challenge's shard format: the first VAL_TOKENS of the validation shard are then a random sample of
held-out documents, not a few files.

Layout written to OUT (default: <repo>/data/proxy, or data/proxy_sp<V> for another vocabulary):
    proxy_<V>_bpe.model           SentencePiece model (<pad>=0, <s>=1, </s>=2, <unk>=3)
    fineweb_train_000000.bin ...  train tokens, shards of up to 2,000,000 tokens
    fineweb_val_000000.bin        validation tokens
The documents and their order do not depend on the vocabulary: the corpora of two vocabularies
hold the same held-out text, so their bits per byte compare.

Usage: python data/make_proxy.py [--out DIR] [--vocab V] [--max-chars N] [--force]
"""
import argparse
import random
import sys
import sysconfig
from pathlib import Path

import sentencepiece as spm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_sample import REPO, SampleError, encode, shard_bytes, source_files, train_tokenizer  # noqa: E402
from train_gpt import RunError, TokenBytes, atomic_write  # noqa: E402  (make_sample put the repo on the path)

VOCAB_SIZE = 1024
SEED = 20240520
VAL_EVERY = 25  # one file in 25 is held out
MAX_DOC_CHARS = 6000  # a document: whole paragraphs up to this many characters (~2,900 tokens)
SHARD_TOKENS = 2_000_000
TOKENIZER_CHARS = 6_000_000  # paragraphs the tokenizer is trained on: enough for 1024 pieces, quick to train
MIN_TRAIN_TOKENS, MIN_VAL_TOKENS = 5_000_000, 250_000
SKIP_DIRS = {"site-packages", "__pycache__"}


def default_out(vocab_size: int = VOCAB_SIZE) -> Path:
    return REPO / "data" / ("proxy" if vocab_size == VOCAB_SIZE else f"proxy_sp{vocab_size}")


def tokenizer_name(vocab_size: int = VOCAB_SIZE) -> str:
    return f"proxy_{vocab_size}_bpe.model"


def collect_files(max_chars: int | None = None) -> list[tuple[str, str]]:
    """(package, text) of the stdlib's .py files in sorted path order, then pydoc_data's topics; up to
    max_chars. The package is the file's first path component under the stdlib (pydoc_data for topics)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [(path.relative_to(stdlib).parts[0].removesuffix(".py"), path.read_bytes().decode("utf-8", "replace"))
             for path in source_files(stdlib, SKIP_DIRS)]
    topics = stdlib / "pydoc_data" / "topics.py"
    if topics.is_file():
        namespace = {}
        exec(compile(topics.read_text(encoding="utf-8"), str(topics), "exec"), namespace)  # a dict literal
        files += [("pydoc_data", namespace["topics"][key]) for key in sorted(namespace["topics"])]
    files = [(package, text) for package, text in files if text.strip()]
    if max_chars is not None:
        kept, total = [], 0
        for package, text in files:
            if total + len(text) > max_chars:
                break
            kept.append((package, text))
            total += len(text)
        files = kept
    return files


def split_documents(text: str, max_chars: int = MAX_DOC_CHARS) -> list[str]:
    """The text cut into documents of whole paragraphs (blank-line separated), each at most max_chars;
    a longer paragraph is cut at line ends, a longer line at max_chars."""
    pieces = []
    for paragraph in (p for p in text.split("\n\n") if p.strip()):
        lines, line = [], ""
        for part in paragraph.splitlines(keepends=True):
            while len(part) > max_chars:
                lines.append(part[:max_chars])
                part = part[max_chars:]
            if len(line) + len(part) > max_chars:
                lines.append(line)
                line = ""
            line += part
        pieces += lines + [line]
    docs, doc = [], ""
    for piece in (p for p in pieces if p.strip()):
        if doc and len(doc) + 2 + len(piece) > max_chars:
            docs.append(doc)
            doc = ""
        doc = piece if not doc else doc + "\n\n" + piece
    return docs + ([doc] if doc.strip() else [])


def split_corpus(files: list[tuple[str, str]], seed: int = SEED) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(train, val) documents as (index of their file, text): one file in VAL_EVERY held out whole
    (files chosen by the seed), each side's documents in a seeded shuffled order."""
    rng = random.Random(seed)
    held_out = set(rng.sample(range(len(files)), max(1, len(files) // VAL_EVERY))) if len(files) > 1 else set()
    train, val = [], []
    for i, (_, text) in enumerate(files):
        (val if i in held_out else train).extend((i, doc) for doc in split_documents(text))
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val


def tokenizer_paragraphs(docs: list[str], max_chars: int = TOKENIZER_CHARS) -> list[str]:
    """Paragraphs (blank-line separated) of the documents, spread evenly over them, up to max_chars."""
    paragraphs = [p for doc in docs for p in doc.split("\n\n") if p.strip()]
    step = max(1, sum(map(len, paragraphs)) // max_chars)
    return paragraphs[::step]


def build_proxy(out_dir, max_chars: int | None = None, min_train: int = MIN_TRAIN_TOKENS,
                min_val: int = MIN_VAL_TOKENS, vocab_size: int = VOCAB_SIZE) -> dict:
    """Builds the corpus into out_dir (all files or none); its counts."""
    files = collect_files(max_chars)
    train_docs, val_docs = split_corpus(files)
    if not val_docs or not train_docs:
        raise SampleError(f"only {len(files)} files collected: raise --max-chars")
    train_text, val_text = [d for _, d in train_docs], [d for _, d in val_docs]
    model = train_tokenizer(tokenizer_paragraphs(train_text), vocab_size)
    sp = spm.SentencePieceProcessor(model_proto=model)
    train, val = encode(sp, train_text), encode(sp, val_text)
    if len(train) < min_train or len(val) < min_val:
        raise SampleError(f"{len(train):,} train and {len(val):,} validation tokens, fewer than the "
                          f"{min_train:,} and {min_val:,} the proxy needs")
    out = Path(out_dir)
    files_out = {out / tokenizer_name(vocab_size): model, out / "fineweb_val_000000.bin": shard_bytes(val)}
    for i, start in enumerate(range(0, len(train), SHARD_TOKENS)):
        files_out[out / f"fineweb_train_{i:06d}.bin"] = shard_bytes(train[start:start + SHARD_TOKENS])
    out.mkdir(parents=True, exist_ok=True)
    for stale in set(out.glob("fineweb_*.bin")) - set(files_out):  # shards of an earlier, larger build
        stale.unlink()
    atomic_write(files_out)
    ids = torch.from_numpy(val.astype("int64"))
    counted = TokenBytes(sp).count(ids[:-1], ids[1:])  # the bytes the evaluation counts
    return {"files": len(files), "train_docs": len(train_docs), "val_docs": len(val_docs), "train_tokens": len(train),
            "val_tokens": len(val), "train_shards": len(files_out) - 2,
            "bytes_per_token": float(counted.sum()) / (len(val) - 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="output directory (default data/proxy, or data/proxy_sp<V>)")
    parser.add_argument("--vocab", type=int, default=VOCAB_SIZE, help="SentencePiece pieces (default 1024)")
    parser.add_argument("--max-chars", type=int, help="corpus size cap (default: everything)")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args(argv)
    out = args.out or default_out(args.vocab)
    if not 256 < args.vocab <= 65536:
        print(f"make_proxy: error: --vocab {args.vocab} must be in (256, 65536] (byte fallback needs 256 pieces; "
              "shards hold uint16)", file=sys.stderr)
        return 1
    if not args.force and (out / tokenizer_name(args.vocab)).is_file() and (out / "fineweb_val_000000.bin").is_file():
        print(f"proxy corpus already built at {out}")
        return 0
    try:
        c = build_proxy(out, args.max_chars, vocab_size=args.vocab)
    except (SampleError, RunError, OSError, RuntimeError) as e:
        message = str(e).strip().splitlines() or [type(e).__name__]
        print(f"make_proxy: error: {message[0]}", file=sys.stderr)
        return 1
    print(f"files {c['files']:,}; documents train={c['train_docs']:,} val={c['val_docs']:,}; tokens "
          f"train={c['train_tokens']:,} ({c['train_shards']} shards) val={c['val_tokens']:,}; "
          f"{c['bytes_per_token']:.3f} bytes per validation token -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
