"""PARALLEL_FROM (recipe §4, a later record's option): from that block on, two residual lanes A and
M; attention reads A, the MLP reads M, each writes into both through learned 2x2 weights, each lane
keeps a learned share of itself; the final norm reads their mean. Off (0) is the record's model."""
import math

import pytest
import torch

import train_gpt as tg
from conftest import CPU, filled_model, run_and_reread, tiny_args

LANE_PARAMS = ("lane_writes", "lane_keeps")


def lanes_model(parallel_from=2, seed=1):
    model = filled_model(tiny_args(parallel_from=str(parallel_from)), seed=seed)
    g = torch.Generator().manual_seed(seed + 10)
    with torch.no_grad():  # lane weights and skip weights away from their inits, so each one matters
        for name, p in model.named_parameters():
            if name.endswith(LANE_PARAMS) or name == "skip_weights":
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def reference_hidden(model, ids):
    """The §4 formulas written out: the record's blocks, then lanes A and M from PARALLEL_FROM."""
    x = model.smear(tg.rms_norm(model.tok_emb(ids) + model.bigram(tg.bigram_hash(ids, model.bigram.embed.num_embeddings))))
    x0, skips, ve, A = x, [], model.ve_shared(ids), None
    rope = tg.rotary(ids.size(1), model.rope_dims, model.rope_base, CPU)
    for i, block in enumerate(model.blocks):
        j = model.ve_index.get(i)
        block_ve = None if j is None else ve * model.ve_layer_scales[j]
        skip = model.skip_weights[i - (len(model.blocks) // 2)] * skips.pop() if i >= (len(model.blocks) // 2) and skips else 0
        if not block.parallel:
            x = block(x + skip, x0, block_ve, rope)
            if i < (len(model.blocks) // 2):
                skips.append(x)
            continue
        if A is None:
            A, M = x, x
        A, M = A + skip, M + skip
        p, r, mix, f = block.lane_writes, block.lane_keeps, block.resid_mix, block.ln_scale
        a = block.attn_scale * block.attn(tg.rms_norm(mix[0] * A + mix[1] * x0) * f, block_ve, rope)
        A, M = r[0] * A + p[0, 0] * a, r[0] * M + p[0, 1] * a
        m = block.mlp_scale * block.mlp(tg.rms_norm(mix[0] * M + mix[1] * x0) * f)
        A, M = r[1] * A + p[1, 0] * m, r[1] * M + p[1, 1] * m
    return x if A is None else 0.5 * (A + M)


def test_parameters_shapes_and_inits():
    plain = tg.build_model(tiny_args())
    model = tg.build_model(tiny_args(parallel_from="2"))  # 4 blocks: 2 and 3 are parallel
    added = {k: v for k, v in model.state_dict().items() if k not in plain.state_dict()}
    assert sorted(added) == sorted(f"blocks.{i}.{n}" for i in (2, 3) for n in LANE_PARAMS)
    for i in (2, 3):
        assert torch.equal(model.blocks[i].lane_writes, torch.ones(2, 2))
        assert torch.allclose(model.blocks[i].lane_keeps, torch.full((2,), math.sqrt(1.1)))
    assert [b.parallel for b in model.blocks] == [False, False, True, True]
    assert not any(n.endswith(LANE_PARAMS) for n in plain.state_dict())
    # scalars: AdamW's scalar group, and passthrough in the artifact
    optimizers = tg.build_optimizers(model, tiny_args(parallel_from="2"), tg.Runtime(0, 1, CPU))
    scalars = {id(p) for p in optimizers.adam.param_groups[1]["params"]}
    assert all(id(model.blocks[i].get_parameter(n)) in scalars for i in (2, 3) for n in LANE_PARAMS)
    meta = tg.quantize_state_dict(model.state_dict(), 256)["m"]
    assert all(meta[f"blocks.{i}.{n}"] == "passthrough" for i in (2, 3) for n in LANE_PARAMS)


@pytest.mark.parametrize("parallel_from", [2, 3])
def test_forward_is_the_lane_formulas(parallel_from):
    model = lanes_model(parallel_from)
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.hidden(ids), reference_hidden(model, ids), rtol=1e-5, atol=1e-5)
        plain = filled_model(tiny_args(), seed=1).eval()
        assert not torch.allclose(model.hidden(ids), plain.hidden(ids), atol=1e-3)


def test_every_lane_weight_gets_a_gradient():
    model = lanes_model(2).train()
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    model(ids[:, :-1], ids[:, 1:]).backward()
    for i in (2, 3):
        for name in LANE_PARAMS:
            grad = model.blocks[i].get_parameter(name).grad
            assert grad is not None and grad.abs().min() > 0, (i, name)


def test_compiled_equals_eager():
    model = lanes_model(2)
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = model.forward_logits(ids)
        compiled = torch.compile(model.forward_logits, dynamic=False, fullgraph=True)(ids)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_off_is_the_record_and_bad_settings_are_one_line():
    assert tiny_args().parallel_from == 0
    for bad in ("1", "4"):  # an encoder block; past the last block
        with pytest.raises(tg.InputError, match=rf"^PARALLEL_FROM={bad} must be 0 \(off\) or a decoder block in \[2, 4\)$"):
            tiny_args(parallel_from=bad)


def test_an_artifact_with_lanes_is_read_back_by_eval_only_mode(tiny_env, monkeypatch):
    run_and_reread(monkeypatch, PARALLEL_FROM="2", TTT_ENABLED="0")
