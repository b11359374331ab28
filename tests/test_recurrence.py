"""RECUR_LAYERS / RECUR_STEP (recipe §4, a later record's depth recurrence): consecutive blocks run
a second time once the run reaches RECUR_STEP; the second passes share the blocks' attention
weights and get their own MLPs and scalars, copied from the blocks at switch-on; LN scales follow
the virtual index. Both graphs are compiled during warm-up priming, so switching on inside a
compiled run compiles nothing; the artifact holds the repeats and EVAL_ARTIFACT runs them."""
import math

import pytest
import torch
import torch._dynamo.testing

import train_gpt as tg
from conftest import CPU, filled_model, one, run_and_reread, run_lines, tiny_args

REPEATED = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "mlp.fc.weight", "mlp.proj.weight")


def recur_args(**overrides):
    return tiny_args(**dict(dict(recur_layers="1,2", warmup_steps="4"), **overrides))


def test_the_repeats_parameters_and_the_rest_initialised_as_without():
    plain, model = tg.build_model(tiny_args()).state_dict(), tg.build_model(recur_args()).state_dict()
    added = sorted(k for k in model if k not in plain)
    assert added == sorted(["config_recur_layers"] + [f"repeats.{j}.{n}" for j in (0, 1) for n in REPEATED])
    assert model["config_recur_layers"].tolist() == [1, 2]  # recorded in the artifact, checked on load
    assert all(torch.equal(model[k], v) for k, v in plain.items())  # the repeats are initialised last
    built = tg.build_model(recur_args())
    assert not built.recurring and [i for i, *_ in built.passes()] == [0, 1, 2, 3]
    built.recurring = True  # the repeats stay out of the U-Net: blocks 0 and 1 push, 2 and 3 take skips 0 and 1
    assert [(i, r is not None, push, skip) for i, r, push, skip in built.passes()] == [
        (0, False, True, None), (1, False, True, None), (2, False, False, 0), (1, True, False, None), (2, True, False, None),
        (3, False, False, 1)]


def reference_hidden(model, ids):
    """Blocks 0, 1, 2, then 1 and 2 again with the repeats' MLPs and scalars, then 3; U-Net skips by
    block; every pass's LN scale 1/sqrt(v+1) of its virtual index v."""
    x = model.smear(tg.rms_norm(model.tok_emb(ids) + model.bigram(tg.bigram_hash(ids, model.bigram.embed.num_embeddings))))
    x0, skips, ve = x, [], model.ve_shared(ids)
    rope = tg.rotary(ids.size(1), model.rope_dims, model.rope_base, CPU)
    for v, (i, repeat) in enumerate([(0, None), (1, None), (2, None), (1, 0), (2, 1), (3, None)]):
        block, f = model.blocks[i], 1 / math.sqrt(v + 1)
        own = block if repeat is None else model.repeats[repeat]
        q_gain = block.attn.q_gain if repeat is None else own.q_gain
        j = model.ve_index.get(i)
        block_ve = None if j is None else ve * model.ve_layer_scales[j]
        if repeat is None and i >= (len(model.blocks) // 2) and skips:
            x = x + model.skip_weights[i - (len(model.blocks) // 2)] * skips.pop()
        x = own.resid_mix[0] * x + own.resid_mix[1] * x0
        x = x + own.attn_scale * block.attn(tg.rms_norm(x) * f, block_ve, rope, q_gain)
        x = x + own.mlp_scale * own.mlp(tg.rms_norm(x) * f)
        if repeat is None and i < (len(model.blocks) // 2):
            skips.append(x)
    return x


def test_switching_on_copies_the_blocks_and_the_forward_is_the_virtual_order():
    model = filled_model(recur_args(), seed=2).eval()
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model.hidden(ids)
        model.start_recurrence()
        for repeat, block in model.recurrence_copies():
            assert torch.equal(model.get_parameter(repeat), model.get_parameter(block))
        g = torch.Generator().manual_seed(5)
        for p in model.repeats.parameters():  # the repeats train apart from their blocks from now on
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        after = model.hidden(ids)
        torch.testing.assert_close(after, reference_hidden(model, ids), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(before, after, atol=1e-3)
        model.recurring = False
        torch.testing.assert_close(model.hidden(ids), before, rtol=0, atol=0)


def test_gradients_reach_the_repeats_and_both_passes_of_the_shared_attention():
    model = filled_model(recur_args(), seed=2).train()
    model.start_recurrence()
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    model(ids[:, :-1], ids[:, 1:]).backward()
    for j in (0, 1):
        for name in REPEATED:
            grad = model.repeats[j].get_parameter(name).grad
            assert grad is not None and grad.abs().sum() > 0, (j, name)
    once = model.blocks[1].attn.c_q.weight.grad.clone()
    model.zero_grad()
    model.recurring = False
    model(ids[:, :-1], ids[:, 1:]).backward()
    assert not torch.allclose(once, model.blocks[1].attn.c_q.weight.grad)  # the second pass adds to it


def test_switching_on_inside_a_compiled_run_compiles_nothing_after_priming(tiny_env, monkeypatch):
    """A whole run through main() with COMPILE=1 (aot_eager: forward and backward traced ahead of
    time, fullgraph): the graphs counted when warm-up priming returns are all that exist when the
    loop's final evaluation starts, after the repeats and late QAT switched on."""
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn=None, **kw: compile_(fn, **dict(kw, backend=counter)))
    counts = {}
    prime, evaluate = tg.warmup_prime, tg.evaluate

    def primed(*a, **k):
        prime(*a, **k)
        counts["primed"] = counter.frame_count

    def evaluated(*a, **k):
        counts.setdefault("evaluation", counter.frame_count)
        return evaluate(*a, **k)
    monkeypatch.setattr(tg, "warmup_prime", primed)
    monkeypatch.setattr(tg, "evaluate", evaluated)
    for key, value in dict(COMPILE="1", RECUR_LAYERS="1,2", RECUR_STEP="3", WARMUP_STEPS="4", ITERATIONS="10",
                           WARMDOWN_ITERS="20", TTT_ENABLED="0").items():
        monkeypatch.setenv(key, value)
    try:
        tg.main()
    finally:
        torch._dynamo.reset()
    lines = run_lines("logs/tiny.txt")
    one(lines, r"recurrence:enabled step:3 layers:1,2 virtual_layers:6")
    assert lines.index(one(lines, r"late_qat:enabled step:\d+ scale:[\d.]+").string) > lines.index(one(lines, r"recurrence:enabled step:3 .*").string)
    assert counts["primed"] > 0 and counts["evaluation"] == counts["primed"], counts


def test_the_ema_holds_the_copies_at_switch_on():
    model = filled_model(recur_args(), seed=2)
    ema, said = tg.EMA(model, 0.9), []
    tg.start_recurrence(model, ema, said.append, "step:3")
    assert said == ["recurrence:enabled step:3 layers:1,2 virtual_layers:6"]
    for repeat, block in model.recurrence_copies():
        assert torch.equal(ema.weights[repeat], ema.weights[block])


def test_a_run_that_ends_before_recur_step_switches_on_at_its_end_and_eval_only_reproduces_it(tiny_env, monkeypatch):
    lines = run_and_reread(monkeypatch, RECUR_LAYERS="1,2", RECUR_STEP="100", WARMUP_STEPS="4", TTT_ENABLED="0")
    one(lines, r"recurrence:enabled at_end step:12 \(RECUR_STEP=100 not reached\) layers:1,2 virtual_layers:6")
    one(lines, r"quantized_tensors: int6:28 int8:3 passthrough:\d+")  # 4 repeat matrices more than 24
    # the same artifact, scored with other blocks repeated (the same tensor names): refused, not scored
    monkeypatch.setenv("RECUR_LAYERS", "0,1")
    with pytest.raises(tg.InputError, match=r"^the artifact was trained with RECUR_LAYERS=1,2, and this run has RECUR_LAYERS=0,1$"):
        tg.main()


def test_bad_settings_are_one_line():
    with pytest.raises(tg.InputError, match=r"RECUR_LAYERS=1,3 must be consecutive blocks from 0 on, before PARALLEL_FROM"):
        recur_args(recur_layers="1,3")
    with pytest.raises(tg.InputError, match=r"RECUR_LAYERS=2,3 must be consecutive blocks from 0 on, before PARALLEL_FROM"):
        recur_args(recur_layers="2,3", parallel_from="3")
    for negative in ("-1", "-2,-1"):  # once accepted, and a crash when the repeats switched on
        with pytest.raises(tg.InputError, match=rf"^RECUR_LAYERS={negative} must be consecutive blocks from 0 on"):
            recur_args(recur_layers=negative)
    for gap in (",", "4,", "4,,5", ",4"):  # once read as 4 or as 4,5
        with pytest.raises(tg.InputError, match=rf"^RECUR_LAYERS='{gap}' is not valid: expected comma-separated integers$"):
            recur_args(recur_layers=gap)
    with pytest.raises(tg.InputError, match=r"^RECUR_LAYERS needs WARMUP_STEPS >= 4"):
        recur_args(warmup_steps="2")
