"""Build the CPU proxy corpus: a corpus large enough to rank two settings of the recipe on a CPU.

The documents are the Python standard library's own source files, whole (code, comments and
docstrings, its test suites included), and the documentation it ships (pydoc_data's topics), read
as text (nothing is imported), so every Python installation has them and the same installation
always yields byte-identical output. Every 25th document (in sorted path order) is held out for
validation, by whole file. A 1024-piece SentencePiece BPE is trained on paragraphs of the train
documents, and each document is written as [BOS=1] + its tokens, in the challenge's shard format.

Layout written to OUT (default: <repo>/data/proxy):
    proxy_1024_bpe.model          SentencePiece model (<pad>=0, <s>=1, </s>=2, <unk>=3)
    fineweb_train_000000.bin ...  train tokens, shards of up to 2,000,000 tokens
    fineweb_val_000000.bin        validation tokens

Usage: python data/make_proxy.py [--out DIR] [--max-chars N] [--force]
"""
import argparse
import sys
import sysconfig
from pathlib import Path

import sentencepiece as spm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_sample import REPO, SampleError, encode, shard_bytes, source_files, train_tokenizer  # noqa: E402
from train_gpt import RunError, TokenBytes, atomic_write  # noqa: E402  (make_sample put the repo on the path)

DEFAULT_OUT = REPO / "data" / "proxy"
VOCAB_SIZE = 1024
VAL_EVERY = 25
SHARD_TOKENS = 2_000_000
TOKENIZER_CHARS = 6_000_000  # paragraphs the tokenizer is trained on: enough for 1024 pieces, quick to train
MIN_TRAIN_TOKENS, MIN_VAL_TOKENS = 5_000_000, 250_000
SKIP_DIRS = {"site-packages", "__pycache__"}


def tokenizer_name(vocab_size: int = VOCAB_SIZE) -> str:
    return f"proxy_{vocab_size}_bpe.model"


def collect_documents(max_chars: int | None = None) -> list[str]:
    """The stdlib's .py files in sorted path order, then pydoc_data's topics; up to max_chars."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = [path.read_bytes().decode("utf-8", "replace") for path in source_files(stdlib, SKIP_DIRS)]
    topics = stdlib / "pydoc_data" / "topics.py"
    if topics.is_file():
        namespace = {}
        exec(compile(topics.read_text(encoding="utf-8"), str(topics), "exec"), namespace)  # a dict literal
        docs += [namespace["topics"][key] for key in sorted(namespace["topics"])]
    docs = [d for d in docs if d.strip()]
    if max_chars is not None:
        kept, total = [], 0
        for doc in docs:
            if total + len(doc) > max_chars:
                break
            kept.append(doc)
            total += len(doc)
        docs = kept
    return docs


def tokenizer_paragraphs(docs: list[str], max_chars: int = TOKENIZER_CHARS) -> list[str]:
    """Paragraphs (blank-line separated) of the documents, spread evenly over them, up to max_chars."""
    paragraphs = [p for doc in docs for p in doc.split("\n\n") if p.strip()]
    step = max(1, sum(map(len, paragraphs)) // max_chars)
    return paragraphs[::step]


def build_proxy(out_dir, max_chars: int | None = None, min_train: int = MIN_TRAIN_TOKENS,
                min_val: int = MIN_VAL_TOKENS) -> dict:
    """Builds the corpus into out_dir (all files or none); its counts."""
    docs = collect_documents(max_chars)
    val_docs, train_docs = docs[::VAL_EVERY], [d for i, d in enumerate(docs) if i % VAL_EVERY]
    if not val_docs or not train_docs:
        raise SampleError(f"only {len(docs)} documents collected: raise --max-chars")
    model = train_tokenizer(tokenizer_paragraphs(train_docs), VOCAB_SIZE)
    sp = spm.SentencePieceProcessor(model_proto=model)
    train, val = encode(sp, train_docs), encode(sp, val_docs)
    if len(train) < min_train or len(val) < min_val:
        raise SampleError(f"{len(train):,} train and {len(val):,} validation tokens, fewer than the "
                          f"{min_train:,} and {min_val:,} the proxy needs")
    out = Path(out_dir)
    files = {out / tokenizer_name(): model, out / "fineweb_val_000000.bin": shard_bytes(val)}
    for i, start in enumerate(range(0, len(train), SHARD_TOKENS)):
        files[out / f"fineweb_train_{i:06d}.bin"] = shard_bytes(train[start:start + SHARD_TOKENS])
    out.mkdir(parents=True, exist_ok=True)
    for stale in set(out.glob("fineweb_*.bin")) - set(files):  # shards of an earlier, larger build
        stale.unlink()
    atomic_write(files)
    ids = torch.from_numpy(val.astype("int64"))
    counted = TokenBytes(sp).count(ids[:-1], ids[1:])  # the bytes the evaluation counts
    return {"train_docs": len(train_docs), "val_docs": len(val_docs), "train_tokens": len(train),
            "val_tokens": len(val), "train_shards": len(files) - 2,
            "bytes_per_token": float(counted.sum()) / (len(val) - 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--max-chars", type=int, help="corpus size cap (default: everything)")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args(argv)
    if not args.force and (args.out / tokenizer_name()).is_file() and (args.out / "fineweb_val_000000.bin").is_file():
        print(f"proxy corpus already built at {args.out}")
        return 0
    try:
        c = build_proxy(args.out, args.max_chars)
    except (SampleError, RunError, OSError, RuntimeError) as e:
        message = str(e).strip().splitlines() or [type(e).__name__]
        print(f"make_proxy: error: {message[0]}", file=sys.stderr)
        return 1
    print(f"docs train={c['train_docs']:,} val={c['val_docs']:,}; tokens train={c['train_tokens']:,} "
          f"({c['train_shards']} shards) val={c['val_tokens']:,}; {c['bytes_per_token']:.3f} bytes per validation "
          f"token -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
