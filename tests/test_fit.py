"""FIT=1 (recipe §6): an artifact that would put the submission at or over the limit has its cheapest quantised
+-1 values set to 0 (by the H-weighted error they add, plain squared error without a Hessian) until it fits, the
number searched over real compressions; off by default, where an over-limit run still stops as before."""
import re

import pytest
import torch

import train_gpt as tg
from conftest import filled_model, one, run_and_reread, run_lines, tiny_args


def quantised(scale: float = 3.0) -> tuple[dict, dict, dict]:
    model = filled_model(tiny_args())
    weights = {k: v * scale for k, v in model.state_dict().items()}  # rows above the 1/31 scale floor
    ids = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(3))
    hessians = tg.collect_hessians(model.eval(), [ids])
    return tg.quantize_state_dict(weights, 256), weights, hessians


def test_the_cost_of_zeroing_a_value_is_the_error_it_adds():
    """zeroing_costs against the error (w - q s) H (w - q s)^T computed before and after zeroing each value alone."""
    container, weights, hessians = quantised()
    for name, ones, cost in [found for found in tg.zeroing_costs(container, weights, hessians) if found[0] in hessians][:3]:
        q, s = container["w"][name + ".q"].float(), container["w"][name + ".scale"].float()[:, None]
        h, w = hessians[name].double(), weights[name].double()
        for k in range(0, len(ones), max(1, len(ones) // 5)):
            row, col = divmod(int(ones[k]), q.shape[1])
            e = w[row] - (q * s).double()[row]
            zeroed = e.clone()
            zeroed[col] = w[row, col]
            assert float(cost[k]) == pytest.approx(float(zeroed @ h @ zeroed - e @ h @ e), rel=1e-3, abs=1e-9)
    plain = tg.zeroing_costs(container, weights, {})  # no Hessian: plain squared error
    name, ones, cost = plain[0]
    q, s = container["w"][name + ".q"].float(), container["w"][name + ".scale"].float()[:, None]
    w = weights[name].flatten()[ones]
    assert torch.allclose(cost, w.square() - (w - (q * s).flatten()[ones]).square(), atol=1e-6)


def test_fit_prunes_the_cheapest_values_until_the_compressed_artifact_fits():
    container, weights, hessians = quantised()
    before = tg.compress_artifact(container)
    said = []
    assert tg.fit_artifact(container, weights, hessians, len(before), "zstd", said.append) == before and not said
    original = {k: v.clone() for k, v in container["w"].items()}
    costs = tg.zeroing_costs(container, weights, hessians)
    blob = tg.fit_artifact(container, weights, hessians, len(before) - 300, "zstd", said.append)
    assert len(blob) <= len(before) - 300 and blob == tg.compress_artifact(container)
    pruned, total = map(int, re.fullmatch(r"fit: pruned (\d+) of (\d+) \+-1 values \(least H-weighted error\); artifact "
                                          rf"{len(before)} -> {len(blob)} bytes, room {len(before) - 300}; \d+ compressions",
                                          said[0]).groups())
    assert 0 < pruned < total == sum(len(ones) for _, ones, _ in costs)
    zeroed = torch.cat([(container["w"][n + ".q"].flatten()[ones] == 0) for n, ones, _ in costs])
    assert int(zeroed.sum()) == pruned
    every = torch.cat([cost for *_, cost in costs])
    assert every[zeroed].max() <= every[~zeroed].min()  # the cheapest ones
    changed = [k for k in original if not torch.equal(original[k], container["w"][k])]
    assert changed and all(k.endswith(".q") for k in changed)  # scales and passthrough tensors untouched
    with pytest.raises(tg.RunError, match=r"^FIT: the artifact is \d+ bytes with all \d+ of its \+-1 values pruned, over the 100 bytes"):
        tg.fit_artifact(container, weights, hessians, 100, "zstd", said.append)


def test_a_run_a_few_kilobytes_over_the_limit_fits_with_fit_and_stops_without(tiny_env, monkeypatch):
    monkeypatch.setenv("TTT_ENABLED", "0")
    tg.main()
    total = int(one(run_lines("logs/tiny.txt"), r"Total submission size int6\+zstd: (\d+) bytes")[1])
    monkeypatch.setattr(tg, "SUBMISSION_LIMIT_BYTES", total - 2000)
    monkeypatch.setenv("ALLOW_OVER_LIMIT", "1")  # the estimate at start of so small a limit is over it
    monkeypatch.setenv("RUN_ID", "over")
    with pytest.raises(tg.RunError, match=rf"^total submission size {total} bytes is not below the {total - 2000}-byte limit$"):
        tg.main()
    monkeypatch.setenv("RUN_ID", "fit")
    lines = run_and_reread(monkeypatch, FIT="1")
    one(lines, r"fit: pruned \d+ of \d+ \+-1 values \(least H-weighted error\); artifact \d+ -> \d+ bytes, room \d+; \d+ compressions")
    assert int(one(lines, r"Total submission size int6\+zstd: (\d+) bytes")[1]) < total - 2000
    assert lines[-1].startswith("final_int6_sliding_window_exact")  # the run ends well: no ERROR


def test_fit_widens_the_check_at_start_by_its_margin(tiny_env, monkeypatch):
    args = tg.Hyperparameters()
    estimate = tg.estimate_size(tg.build_model(args).state_dict(), args)[0] + tg.code_bytes()
    monkeypatch.setattr(tg, "SUBMISSION_LIMIT_BYTES", int(estimate / (1 + tg.FIT_MARGIN / 2)))  # over, within the margin
    monkeypatch.setenv("ITERATIONS", "0")
    with pytest.raises(tg.InputError, match=r"is not below the \d+-byte limit: make the model smaller, run the packed file \(scripts/pack.py\), set FIT=1 to prune"):
        tg.main()
    monkeypatch.setenv("FIT", "1")
    monkeypatch.setenv("TTT_ENABLED", "0")
    tg.main()  # past the start (the artifact, smaller than estimated, then fits, pruned or not)
    assert run_lines("logs/tiny.txt")[-1].startswith("final_int6_sliding_window_exact")
    monkeypatch.setattr(tg, "SUBMISSION_LIMIT_BYTES", int(estimate / (1 + 2 * tg.FIT_MARGIN)))
    with pytest.raises(tg.InputError, match=r"plus FIT's 2% margin: make the model smaller, run the packed file \(scripts/pack.py\), or set ALLOW_OVER_LIMIT=1$"):
        tg.main()
