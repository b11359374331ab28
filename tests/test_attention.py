"""ATTENTION=auto|fa3|sdpa, and the FlashAttention-3 branch run on the CPU through a stand-in
`flash_attn_interface` (tests/fa3_stand_in) that keeps FA3's contract and computes with SDPA.

Checked against broken code: with the FA3 branch skipped in causal_attention, 5 of these tests
fail; with FA3's (out, lse) tuple returned unpacked, the 2 tuple cases fail."""
import os
import sys

import pytest
import torch

import train_gpt as tg
from conftest import CPU, REPO, filled_model, load_tool, run_script, tiny_args

STAND_IN = REPO / "tests" / "fa3_stand_in"
fa3 = load_tool("tests/fa3_stand_in/flash_attn_interface.py", "flash_attn_interface_stand_in")


@pytest.fixture
def with_fa3(monkeypatch):
    """train_gpt with the stand-in as its FlashAttention-3; its CALLS emptied."""
    monkeypatch.setattr(tg, "flash_attn_3", fa3.flash_attn_func)
    fa3.CALLS.clear()
    return fa3


def test_the_stand_in_is_what_train_gpt_imports_from_the_path():
    env = dict(os.environ, PYTHONPATH=str(STAND_IN))
    code = "import train_gpt as tg; print(tg.flash_attn_3.__module__, tg.attention_backend('auto', tg.torch.device('cuda')))"
    result = run_script([sys.executable, "-c", code], env, REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["flash_attn_interface", "fa3"]


def test_backend_choice(with_fa3, monkeypatch):
    cuda = torch.device("cuda")
    assert [tg.attention_backend(c, cuda) for c in ("auto", "fa3", "sdpa")] == ["fa3", "fa3", "sdpa"]
    assert tg.attention_backend("auto", CPU) == "sdpa"  # FA3 is a CUDA kernel
    monkeypatch.setattr(tg, "flash_attn_3", None)
    assert tg.attention_backend("auto", cuda) == "sdpa"
    with pytest.raises(tg.InputError, match="^ATTENTION=fa3 but flash_attn_interface .* does not import$"):
        tg.attention_backend("fa3", cuda)
    with pytest.raises(tg.InputError, match="ATTENTION must be auto, fa3 or sdpa, got 'flash'"):
        tg.Hyperparameters(attention="flash")


def test_fa3_asked_for_but_missing_stops_at_start(tiny_env, tmp_path):
    result = run_script([sys.executable, str(REPO / "train_gpt.py")], dict(tiny_env, ATTENTION="fa3"), tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: ATTENTION=fa3 but flash_attn_interface (FlashAttention-3) does not import"]


@pytest.mark.parametrize("returns", ["tensor", "tuple"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fa3_branch_equals_sdpa(with_fa3, monkeypatch, returns, dtype):
    monkeypatch.setenv("FA3_STAND_IN_RETURNS", returns)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 10, h, 16, generator=g).to(dtype) for h in (4, 2, 2))
    out = tg.causal_attention(q, k, v, "fa3")
    assert with_fa3.CALLS == [True]  # FA3 ran, causal
    assert out.shape == q.shape and out.dtype == dtype  # an (out, lse) tuple is unpacked
    assert torch.allclose(out.float(), tg.causal_attention(q, k, v, "sdpa").float(), atol=1e-2)
    with pytest.raises(RuntimeError, match="fp16 and bf16"):  # FA3's contract: no fp32
        tg.causal_attention(q.float(), k.float(), v.float(), "fa3")


def test_model_under_bf16_autocast_runs_fa3_in_every_block(with_fa3):
    """The model as it runs on CUDA (bf16 autocast), on the CPU: ATTENTION=fa3 calls FA3 once per
    block and matches SDPA; gradients reach every attention weight through it."""
    args = tiny_args(attention="fa3")
    model = filled_model(args)  # no zero-initialised projection: every weight gets a gradient
    sdpa_model = filled_model(tiny_args(attention="sdpa"))
    ids = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(ids[:, :-1], ids[:, 1:])
        reference = sdpa_model(ids[:, :-1], ids[:, 1:])
    assert with_fa3.CALLS == [True] * args.num_layers
    assert loss.item() == pytest.approx(reference.item(), abs=2e-2)
    loss.backward()
    assert all(b.attn.c_q.weight.grad.abs().sum() > 0 for b in model.blocks)
