"""The artifact size estimated before training (recipe §6): payload bits by storage kind times a
compression ratio measured on trained proxy artifacts; within 3 % of a real trained proxy artifact
(tests/data/proxy_seed42.int6.ptz, written by `scripts/proxy.py`'s base arm, seed 42) for each
compressor; a configuration estimated over the limit is refused at start unless ALLOW_OVER_LIMIT=1."""
import re
from pathlib import Path

import pytest

import train_gpt as tg
from conftest import REPO, load_tool, one, run_lines, tiny_args

PROXY_ARTIFACT = Path(__file__).parent / "data" / "proxy_seed42.int6.ptz"
RECORD_ARTIFACT_BYTES = 15_619_062  # the record's seed 1337 artifact, int6+zstd (docs/recipe.md)


def proxy_args(**overrides) -> tg.Hyperparameters:
    env = load_tool("scripts/proxy.py", "proxy").read_env_file(REPO / "scripts" / "proxy.env")
    return tg.Hyperparameters(**{k.lower(): v for k, v in env.items() if k.lower() in tg.Hyperparameters.defaults()},
                              run_id="estimate", **overrides)


@pytest.mark.parametrize("compressor", ["zstd", "brotli"])
def test_the_estimate_is_within_3_percent_of_a_trained_proxy_artifact(compressor):
    args = proxy_args(compressor=compressor)
    model = tg.build_model(args)
    container = tg.load_artifact(PROXY_ARTIFACT)
    model.load_state_dict(tg.dequantize_state_dict(container, model.state_dict()))  # the proxy's own shapes
    real = len(tg.compress_artifact(container, compressor))
    estimate, _ = tg.estimate_size(model.state_dict(), args)
    assert abs(estimate - real) / real < 0.03, (estimate, real)


def test_the_payload_is_what_the_container_stores():
    """6 bits per int6 value, 8 per int8 value, fp16 scales and passthrough tensors, counted on a
    real container of the tiny model."""
    args = tiny_args()
    state = tg.build_model(args).state_dict()
    container = tg.quantize_state_dict(state, args.passthrough_max_numel)
    bits = 0
    for name, meta in container["m"].items():
        if meta == "passthrough":
            bits += 8 * container["w"][name].numel() * container["w"][name].element_size()
        else:
            bits += container["w"][name + ".q"].numel() * (6 if meta["type"] == "int6" else 8) + 16 * container["w"][name + ".scale"].numel()
    estimate, arithmetic = tg.estimate_size(state, args)
    payload = int(re.search(r"payload (\d+) bytes x 0\.7302 \(zstd\)", arithmetic)[1])
    assert payload == bits // 8 and estimate == round(bits / 8 * tg.COMPRESSION_RATIO["zstd"])
    counts = dict(re.findall(r"(int6|int8|passthrough):(\d+)", arithmetic))
    assert sum(map(int, counts.values())) == sum(t.numel() for t in state.values())


def test_the_default_configuration_fits_and_is_within_3_percent_of_the_record():
    args = tg.Hyperparameters(run_id="estimate")
    estimate, _ = tg.estimate_size(tg.build_model(args).state_dict(), args)
    assert abs(estimate - RECORD_ARTIFACT_BYTES) / RECORD_ARTIFACT_BYTES < 0.03
    assert estimate + len(Path(tg.__file__).read_bytes()) < tg.SUBMISSION_LIMIT_BYTES


def test_over_the_limit_is_refused_at_start_unless_insisted(tiny_env, monkeypatch):
    monkeypatch.setattr(tg, "SUBMISSION_LIMIT_BYTES", 1000)
    with pytest.raises(tg.InputError, match=r"^estimated submission size (\d+) bytes is not below the 1000-byte limit: "
                                            r"make the model smaller, run the packed file \(scripts/pack.py\), set FIT=1 to prune what is over, "
                                            r"or set ALLOW_OVER_LIMIT=1$"):
        tg.main()
    lines = run_lines("logs/tiny.txt")
    one(lines, r"size_estimate: int6:\d+ int8:\d+ passthrough:\d+ params, payload \d+ bytes x 0\.7302 \(zstd\) = \d+ bytes; "
               r"with the code \d+ bytes")
    assert not any(line.startswith("step:") for line in lines) and not Path("final_model.int6.ptz").exists()
    monkeypatch.setenv("ALLOW_OVER_LIMIT", "1")
    monkeypatch.setenv("TTT_ENABLED", "0")
    with pytest.raises(tg.RunError, match="not below the 1000-byte limit"):  # trained, then the real size is over
        tg.main()
    assert any(line.startswith("step:") for line in run_lines("logs/tiny.txt"))
