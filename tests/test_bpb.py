"""Bits per byte (recipe §3): byte counts per target token from the SentencePiece model, the
float64 meter, and the identity 'bytes of the targets = UTF-8 bytes of the decoded text'."""
import math

import numpy as np
import pytest
import torch

import train_gpt
from conftest import TINY_TOKENIZER, TINY_VOCAB, fineweb_tokenizer
from train_gpt import BpbMeter, TokenBytes, load_tokenizer

SPACE = "\u2581"
TEXT = ("The quick brown fox jumps over the lazy dog. Naïve café, déjà vu — 日本語 and emoji 🙂!\n"
        "Second line:  two  spaces, tabs\tand numbers 1234567890; (parentheses) [brackets] {braces}.")


@pytest.fixture(scope="module")
def sp(tiny_data):
    return load_tokenizer(tiny_data / TINY_TOKENIZER, TINY_VOCAB)


@pytest.fixture(scope="module")
def tb(sp):
    return TokenBytes(sp)


def ids_of(sp, *pieces):
    ids = [sp.piece_to_id(p) for p in pieces]
    for p, i in zip(pieces, ids):
        assert sp.id_to_piece(i) == p, f"piece {p!r} is not in the sample tokenizer"
    return ids


def count(tb, prev, target) -> list[float]:
    out = tb.count(torch.tensor(prev), torch.tensor(target))
    assert out.dtype == torch.float64
    return out.tolist()


def target_bytes(tb, ids) -> float:
    """Bytes of ids[1:], each with the token before it as prev."""
    ids = torch.tensor(ids)
    return tb.count(ids[:-1], ids[1:]).sum().item()


# ----------------------------------------------------------------------------- tables of the sample tokenizer

def test_sample_tokenizer_special_pieces(sp, tb):
    pad, bos, eos, unk = ids_of(sp, "<pad>", "<s>", "</s>", "<unk>")
    assert (pad, bos, eos, unk) == (0, 1, 2, 3)
    for i in (pad, bos, eos, unk):
        assert tb.base[i] == 0 and bool(tb.boundary[i]) and not bool(tb.leading_space[i])
    byte_a, byte_nl, byte_ff = ids_of(sp, "<0x41>", "<0x0A>", "<0xFF>")
    for i in (byte_a, byte_nl, byte_ff):
        assert tb.base[i] == 1 and not bool(tb.boundary[i]) and not bool(tb.leading_space[i])
    the, inn, space = ids_of(sp, f"{SPACE}the", "in", SPACE)
    assert (tb.base[the], bool(tb.leading_space[the]), bool(tb.boundary[the])) == (3, True, False)
    assert (tb.base[inn], bool(tb.leading_space[inn]), bool(tb.boundary[inn])) == (2, False, False)
    assert (tb.base[space], bool(tb.leading_space[space])) == (0, True)


def test_sample_tokenizer_whole_table(sp, tb):
    """Every id, from the piece text and the SentencePiece flags (written from recipe §3)."""
    n = sp.vocab_size()
    assert tb.base.shape == tb.leading_space.shape == tb.boundary.shape == (n,)
    assert sum(sp.is_byte(i) for i in range(n)) == 256  # byte fallback
    for i in range(n):
        piece = sp.id_to_piece(i)
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            expected = (0, False, True)
        elif sp.is_byte(i):
            assert piece.startswith("<0x") and len(piece) == 6
            expected = (1, False, False)
        else:
            space = piece.startswith(SPACE)
            expected = (len((piece[1:] if space else piece).encode("utf-8")), space, False)
        assert (int(tb.base[i]), bool(tb.leading_space[i]), bool(tb.boundary[i])) == expected, (i, piece)


def test_count_leading_space_rules(sp, tb):
    pad, bos, eos, unk = 0, 1, 2, 3
    the, inn, space, byte_a = ids_of(sp, f"{SPACE}the", "in", SPACE, "<0x41>")
    # a piece with a leading space: no space byte after a boundary, +1 after anything else
    assert count(tb, [bos, pad, eos, unk], [the] * 4) == [3.0] * 4
    assert count(tb, [inn, the, byte_a, space], [the] * 4) == [4.0] * 4
    # a piece without one: its bytes, whatever came before
    assert count(tb, [bos, inn, the, byte_a], [inn] * 4) == [2.0] * 4
    # the lone space piece: 1 byte unless after a boundary
    assert count(tb, [bos, inn], [space, space]) == [0.0, 1.0]
    # byte pieces: 1 byte always; control and unknown targets: 0 bytes
    assert count(tb, [bos, the, unk], [byte_a] * 3) == [1.0] * 3
    assert count(tb, [the, the, the, the], [pad, bos, eos, unk]) == [0.0] * 4


def test_count_keeps_shape(sp, tb):
    prev = torch.tensor([[1, 300, 301], [268, 1, 3]])
    target = torch.tensor([[300, 301, 268], [268, 268, 268]])
    out = tb.count(prev, target)
    assert out.shape == (2, 3) and out.dtype == torch.float64
    for r in range(2):
        assert out[r].tolist() == tb.count(prev[r], target[r]).tolist()


def test_multibyte_character_through_byte_pieces(sp, tb):
    """No multi-byte piece in the sample vocabulary: 'é' and '日' go through byte pieces."""
    multi = [i for i in range(sp.vocab_size()) if not sp.is_byte(i) and not sp.is_control(i)
             and len(sp.id_to_piece(i).removeprefix(SPACE).encode()) > len(sp.id_to_piece(i).removeprefix(SPACE))]
    for i in multi:  # if the tokenizer had some, they count their UTF-8 bytes
        assert tb.base[i] == len(sp.id_to_piece(i).removeprefix(SPACE).encode("utf-8"))
    for ch in ("é", "日", "🙂"):
        ids = sp.encode(ch)
        pieces = [sp.id_to_piece(i) for i in ids]
        byte_ids = [i for i in ids if sp.is_byte(i)]
        assert len(byte_ids) == len(ch.encode("utf-8")), pieces
        assert target_bytes(tb, [1] + ids) == len(ch.encode("utf-8"))
        # after a normal piece the word's leading space counts
        the = sp.piece_to_id(f"{SPACE}the")
        assert target_bytes(tb, [1, the] + ids) == 3 + 1 + len(ch.encode("utf-8"))


@pytest.mark.parametrize("text", [TEXT, "the", " leading space", "ünïcödé only", "x\n\ny", "a  b   c"])
def test_target_bytes_equal_decoded_utf8_length(sp, tb, text):
    ids = sp.encode(text)
    decoded = sp.decode(ids)
    assert target_bytes(tb, [sp.bos_id()] + ids) == len(decoded.encode("utf-8"))


def test_sample_validation_shard_bytes(sp, tb, tiny_data):
    """Over a whole shard (documents each starting with BOS, prev = the token before): the bytes of
    all targets are the UTF-8 bytes of the decoded documents."""
    tokens = train_gpt.read_shard(tiny_data / "fineweb_val_000000.bin").astype(np.int64)
    assert tokens[0] == 1
    starts = list(np.flatnonzero(tokens == 1)) + [len(tokens)]
    expected = sum(len(sp.decode(tokens[a + 1:b].tolist()).encode("utf-8")) for a, b in zip(starts, starts[1:]))
    t = torch.from_numpy(tokens)
    assert tb.count(t[:-1], t[1:]).sum().item() == expected
    assert len(starts) > 3


# ----------------------------------------------------------------------------- the meter

def test_bpb_meter_float64(sp, tb):
    the, inn = ids_of(sp, f"{SPACE}the", "in")
    meter = BpbMeter(tb, "cpu")
    nll1 = torch.tensor([16777216.0, 1.0, 1.0], dtype=torch.float32)  # fp32 sum would lose the ones
    meter.add(nll1, torch.tensor([1, the, inn]), torch.tensor([the, the, inn]))  # 3 + 4 + 2 bytes
    nll2 = torch.tensor([[0.5, 2.25]], dtype=torch.float32)
    meter.add(nll2, torch.tensor([[inn, 3]]), torch.tensor([[3, the]]))  # 0 + 3 bytes
    assert meter.sums.dtype == torch.float64
    loss, bpb = meter.result()
    total_nll, tokens, nbytes = 16777218.0 + 2.75, 5, 12
    assert loss == total_nll / tokens
    assert bpb == pytest.approx(total_nll / math.log(2) / nbytes, rel=1e-15)


def test_bpb_meter_random(sp, tb):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, sp.vocab_size(), (4, 65), generator=g)
    nll = torch.rand(4, 64, generator=g) * 8
    meter = BpbMeter(tb, torch.device("cpu"))
    meter.add(nll[:2], ids[:2, :-1], ids[:2, 1:])
    meter.add(nll[2:], ids[2:, :-1], ids[2:, 1:])
    loss, bpb = meter.result()
    # reference from the tables, by hand
    nbytes = 0
    for p, t in zip(ids[:, :-1].flatten().tolist(), ids[:, 1:].flatten().tolist()):
        piece = sp.id_to_piece(t)
        if sp.is_control(t) or sp.is_unknown(t) or sp.is_unused(t):
            continue
        if sp.is_byte(t):
            nbytes += 1
            continue
        nbytes += len(piece.removeprefix(SPACE).encode("utf-8"))
        nbytes += piece.startswith(SPACE) and not (sp.is_control(p) or sp.is_unknown(p) or sp.is_unused(p))
    s = sum(float(v) for v in nll.flatten().tolist())
    assert loss == pytest.approx(s / nll.numel(), rel=1e-12)
    assert bpb == pytest.approx(s / math.log(2) / nbytes, rel=1e-12)


# ----------------------------------------------------------------------------- loading tokenizers

# A wrong vocabulary size, a missing tokenizer and a file that is not a model: see test_cli.py
# (vocab_mismatch, missing_tokenizer, tokenizer_not_a_model), which checks their one-line errors.

def test_real_tokenizer_tables():
    """The published tokenizer (FINEWEB_TOKENIZER; skipped when it is unset)."""
    sp = load_tokenizer(fineweb_tokenizer(), 1024)
    tb = TokenBytes(sp)
    assert sp.vocab_size() == 1024
    assert [sp.is_control(i) for i in range(3)] == [True] * 3 and sp.is_unknown(3)
    for i in range(4):
        assert tb.base[i] == 0 and bool(tb.boundary[i]) and not bool(tb.leading_space[i])
    assert not any(sp.is_byte(i) for i in range(1024))
    assert tb.boundary.sum() == 4
    multibyte = 0
    for i in range(4, 1024):
        piece = sp.id_to_piece(i)
        space = piece.startswith(SPACE)
        body = piece[1:] if space else piece
        assert (int(tb.base[i]), bool(tb.leading_space[i])) == (len(body.encode("utf-8")), space), (i, piece)
        multibyte += len(body.encode("utf-8")) > len(body)
    assert multibyte > 0  # e.g. '—' is 3 bytes
    # the decode-length identity on text the vocabulary covers (no <unk>)
    text = ("The quick brown fox jumps over the lazy dog — “quoted” text, numbers 1234567890 and "
            "punctuation: (a); it’s done.\nNew line, then  double  spaces.")
    ids = sp.encode(text)
    assert 3 not in ids
    decoded = sp.decode(ids)
    assert target_bytes(tb, [1] + ids) == len(decoded.encode("utf-8"))
    assert len(decoded.encode("utf-8")) > len(decoded)  # the text really has multi-byte characters
