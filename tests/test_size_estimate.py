"""The artifact size estimated before training (recipe §6): payload bits by storage kind times a
compression ratio measured on trained proxy artifacts, by compressor and scale rule; within 3 % of
real trained proxy artifacts (tests/data/, written by `scripts/proxy.py`'s base and SP8192 arms)
for each compressor and scale rule; a configuration estimated over the limit is refused at start unless ALLOW_OVER_LIMIT=1."""
import re
from pathlib import Path

import pytest

import train_gpt as tg
from conftest import REPO, load_tool, one, run_lines, tiny_args

DATA = Path(__file__).parent / "data"
# trained proxy artifacts (scripts/proxy.py): the base arm's seed 42 (clip search, zstd) and the SP8192 arm's seed 1337
# (GPTQ with SDClip scales and the embedding, brotli; scripts/proxy_sp8192.env on top of the proxy's)
ARTIFACTS = {"search": (DATA / "proxy_seed42.int6.ptz", []), "sdclip": (DATA / "proxy_sp8192_seed1337.int6.ptz", ["proxy_sp8192.env"])}
RECORD_ARTIFACT_BYTES = 15_619_062  # the record's seed 1337 artifact, int6+zstd (docs/recipe.md)


def proxy_args(settings: list[str], **overrides) -> tg.Hyperparameters:
    proxy = load_tool("scripts/proxy.py", "proxy")
    env = {}
    for name in ["proxy.env"] + settings:
        env.update(proxy.read_env_file(REPO / "scripts" / name))
    settings = {k.lower(): v for k, v in env.items() if k.lower() in tg.Hyperparameters.defaults()}
    return tg.Hyperparameters(**{**settings, **overrides}, run_id="estimate")


@pytest.mark.parametrize("rule", ARTIFACTS)
@pytest.mark.parametrize("compressor", ["zstd", "brotli"])
def test_the_estimate_is_within_3_percent_of_a_trained_proxy_artifact(compressor, rule):
    path, settings = ARTIFACTS[rule]
    args = proxy_args(settings, compressor=compressor)
    assert args.gptq_scales == rule
    model = tg.build_model(args)
    container = tg.load_artifact(path)
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
    ratio = tg.COMPRESSION_RATIO["zstd", "search"]
    payload = int(re.search(rf"payload (\d+) bytes x {ratio} \(zstd, search scales\)", arithmetic)[1])
    assert payload == bits // 8 and estimate == round(bits / 8 * ratio)
    counts = dict(re.findall(r"(int6|int8|passthrough):(\d+)", arithmetic))
    assert sum(map(int, counts.values())) == sum(t.numel() for t in state.values())


def test_the_default_configuration_fits_and_is_within_5_percent_of_the_record():
    """The proxy's ratios at full size: 4.2 % under the record's artifact (docs/recipe.md §6), whose larger,
    longer-trained weights compress a little worse."""
    args = tg.Hyperparameters(run_id="estimate")
    estimate, _ = tg.estimate_size(tg.build_model(args).state_dict(), args)
    assert abs(estimate - RECORD_ARTIFACT_BYTES) / RECORD_ARTIFACT_BYTES < 0.05
    assert estimate + len(Path(tg.__file__).read_bytes()) < tg.SUBMISSION_LIMIT_BYTES


def test_over_the_limit_is_refused_at_start_unless_insisted(tiny_env, monkeypatch):
    monkeypatch.setattr(tg, "SUBMISSION_LIMIT_BYTES", 1000)
    with pytest.raises(tg.InputError, match=r"^estimated submission size (\d+) bytes is not below the 1000-byte limit: "
                                            r"make the model smaller, run the packed file \(scripts/pack.py\), set FIT=1 to prune what is over, "
                                            r"or set ALLOW_OVER_LIMIT=1$"):
        tg.main()
    lines = run_lines("logs/tiny.txt")
    one(lines, r"size_estimate: int6:\d+ int8:\d+ passthrough:\d+ params, payload \d+ bytes x 0\.718 \(zstd, search scales\) = \d+ bytes; "
               r"with the code \d+ bytes")
    assert not any(line.startswith("step:") for line in lines) and not Path("final_model.int6.ptz").exists()
    monkeypatch.setenv("ALLOW_OVER_LIMIT", "1")
    monkeypatch.setenv("TTT_ENABLED", "0")
    with pytest.raises(tg.RunError, match="not below the 1000-byte limit"):  # trained, then the real size is over
        tg.main()
    assert any(line.startswith("step:") for line in run_lines("logs/tiny.txt"))
