"""The artifact (recipe §6): mixed int6/int8 quantisation of the default-size state dict, the clip search,
the round trip through zstd on disk, safe loading that refuses anything but plain data, atomic writes,
size accounting against the 16 MB limit, and final_model.pt."""
import collections
import io
import re
from pathlib import Path

import pytest
import torch
import zstandard

import train_gpt as tg
from conftest import (ONE, REPO, TINY, TINY_VOCAB, apply_env, filled_model, make_args, one, run_lines, tiny_args,
                      tiny_run_env)

# The tiny topology, wide enough that some tensors pass 65,536 elements: mlp.fc (768x256) is int6,
# tok_emb (512x256) int8, c_q (256x256 = 65,536) passthrough.
MID = dict(TINY, model_dim="256", num_heads="4", num_kv_heads="2", rope_dims="16")


def make_model(config=TINY, seed=1) -> tg.GPT:
    """A model of config whose zero-initialised tensors are filled, so that every weight matters."""
    return filled_model(make_args(config, seed=str(seed)), seed)


def spec_kind(name: str, t: torch.Tensor) -> str:
    """recipe §6 written out: small or non-float -> passthrough; attention/MLP matrices (a .proj.
    outside .mlp. counts as attention) -> int6; everything else -> int8."""
    if not t.is_floating_point() or t.numel() <= 65_536:
        return "passthrough"
    if ".attn." in name or ".mlp." in name or ".proj." in name:
        return "int6"
    return "int8"


# ----------------------------------------------------------------------------- the default state dict

@pytest.fixture(scope="module")
def default_quantised():
    """The default-size (27M) state dict, with realistic non-zero weights of mixed magnitudes (some rows
    far above the 1/31 scale floor, a few outliers), and its quantised container. Built once."""
    with torch.random.fork_rng(devices=[]):
        model = tg.build_model(make_args())  # the defaults, whatever the environment
        g = torch.Generator().manual_seed(0)
        sd = {}
        for name, t in model.state_dict().items():
            t = t.detach().clone()
            if t.is_floating_point() and t.ndim == 2 and t.numel() > 65_536:
                if not t.any():
                    t = torch.randn(t.shape, generator=g) * 0.03
                t[::3] *= 40  # every third row well above the scale floor
                t[1::7, 5] = 25.0  # outliers
            sd[name] = t
        container = tg.quantize_state_dict(sd)
    return sd, container


def test_quantisation_routes_every_tensor_by_spec(default_quantised):
    sd, container = default_quantised
    assert set(container) == {"w", "m"}
    weights, meta = container["w"], container["m"]
    assert sum(t.numel() for t in sd.values()) == 27_124_828
    assert set(meta) == set(sd)
    kinds = {name: spec_kind(name, t) for name, t in sd.items()}
    for name, kind in kinds.items():
        assert meta[name] == ("passthrough" if kind == "passthrough" else {"type": kind}), name

    int6 = {f"blocks.{i}.{part}.weight" for i in range(11)
            for part in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj")}
    assert {n for n, k in kinds.items() if k == "int6"} == int6
    assert {n for n, k in kinds.items() if k == "int8"} == {"tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight"}
    assert sd["bigram.proj.weight"].numel() == 65_536 and meta["bigram.proj.weight"] == "passthrough"  # the boundary

    expected_keys = set()
    for name, t in sd.items():
        if kinds[name] == "passthrough":
            expected_keys.add(name)
            stored = weights[name]
            assert stored.dtype == (torch.float16 if t.is_floating_point() else t.dtype), name
            assert torch.equal(stored, t.half() if t.is_floating_point() else t), name
        else:
            expected_keys |= {name + ".q", name + ".scale"}
            q, scale = weights[name + ".q"], weights[name + ".scale"]
            max_q = 31 if kinds[name] == "int6" else 127
            assert q.dtype == torch.int8 and q.shape == t.shape, name
            assert scale.dtype == torch.float16 and scale.shape == (t.shape[0],), name
            assert int(q.abs().max()) <= max_q, name
            assert name not in weights
    assert set(weights) == expected_keys
    # int6 really uses its range on the large rows, and int8 its own
    assert int(weights["blocks.0.mlp.fc.weight.q"].abs().max()) == 31
    assert int(weights["tok_emb.weight.q"].abs().max()) > 31


def smoke_config() -> dict:
    """scripts/smoke.env as Hyperparameters keyword arguments (the data paths left out)."""
    lines = (REPO / "scripts" / "smoke.env").read_text().splitlines()
    pairs = dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {k.lower(): v for k, v in pairs.items() if k not in ("DATA_PATH", "TOKENIZER_PATH")}


def kinds_by_role(args: tg.Hyperparameters) -> dict[str, str]:
    """Each tensor's kind in the artifact of this configuration's model, by its name with the block
    number replaced (block counts differ between configurations)."""
    state = tg.build_model(args).state_dict()
    return {re.sub(r"blocks\.\d+\.", "blocks.N.", name): tg.quant_kind(name, t, args.passthrough_max_numel)
            for name, t in state.items()}


@pytest.mark.parametrize("config", ["smoke", "tiny"])
def test_small_configurations_quantise_what_the_full_size_model_quantises(default_quantised, config):
    """With their PASSTHROUGH_MAX_NUMEL, the smoke and test configurations store exactly the tensors
    that are int6, int8 or fp16 at full size as int6, int8 or fp16: their runs quantise for real."""
    sd, container = default_quantised
    full = {re.sub(r"blocks\.\d+\.", "blocks.N.", name): m if m == "passthrough" else m["type"]
            for name, m in container["m"].items()}
    small = kinds_by_role(make_args(smoke_config() if config == "smoke" else TINY))
    assert small == full
    assert kinds_by_role(make_args(TINY, passthrough_max_numel="65536")) != full  # the setting is what makes it so


def test_dequantised_error_is_at_most_half_a_step_below_the_clip(default_quantised):
    sd, container = default_quantised
    restored = tg.dequantize_state_dict(container, sd)
    checked = {"int6": 0, "int8": 0}
    for name, kind in container["m"].items():
        if kind == "passthrough":
            continue
        w = sd[name].float()
        q, scale = container["w"][name + ".q"], container["w"][name + ".scale"].float()
        max_q = 31 if kind["type"] == "int6" else 127
        clip = scale * max_q  # the row's effective clip
        unclipped = w.abs() <= clip[:, None]
        assert unclipped.float().mean() > 0.99, name  # the bound below is not vacuous
        err = (restored[name] - w).abs()
        bound = (scale / 2 * (1 + 1e-5) + 1e-7)[:, None].expand_as(w)
        assert (err[unclipped] <= bound[unclipped]).all(), f"{name}: max err/step {(err / scale[:, None])[unclipped].max()}"
        # clipped entries saturate at +-clip with their sign
        assert torch.equal(q[~unclipped].long().abs(), torch.full_like(q[~unclipped].long(), max_q)), name
        assert torch.equal(torch.sign(q[~unclipped].float()), torch.sign(w[~unclipped])), name
        # the scale floor and, for int8, the clip quantile 0.9999984 of |w| along the row
        assert (scale >= torch.tensor(1 / max_q).half().float()).all(), name
        if kind["type"] == "int8":
            want = (torch.quantile(w.abs(), 0.9999984, dim=1) / 127).clamp_min(1 / 127).half().float()
            assert torch.equal(scale, want), name
        checked[kind["type"]] += 1
    assert checked == {"int6": 66, "int8": 3}


def heavy_tailed_rows() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(48, 2048, generator=g) * torch.exp(torch.randn(48, 2048, generator=g)) * 2  # heavy tails
    w[32:40] = torch.randn(8, 2048, generator=g) * 0.01  # small rows: the 1/31 floor
    w[40:] = torch.sign(torch.randn(8, 2048, generator=g)) * 3.1  # +-3.1 and one outlier that clipping
    w[40:, 0] = 62.0  # would cost dearly: the row max wins
    return w


def row_error(w, q, scale):
    return (q.float() * scale.float()[:, None] - w).square().sum(dim=1)


def test_a_non_finite_row_stays_non_finite_and_is_not_zeroed():
    """A row whose scale overflows fp16 or whose weights are NaN keeps its non-finite scale, so the
    roundtrip evaluation stops the run, instead of being quantised to zeros."""
    w = torch.ones(3, 128)
    w[0, 5], w[1] = float("nan"), 3e6  # 3e6 / 31 overflows fp16
    q, scale = tg.quantize_rows(w, 31, tg.INT6_CLIP_QUANTILES)
    assert not scale[:2].isfinite().any() and torch.equal(scale[2:], torch.tensor([1 / 31]).half())
    assert torch.equal(q[2], torch.full((128,), 31, dtype=torch.int8))


def test_clip_search_never_worse_than_row_max():
    w = heavy_tailed_rows()
    q, scale = tg.quantize_rows(w, 31, tg.INT6_CLIP_QUANTILES)
    q_max, scale_max = tg.quantize_rows(w, 31, (1.0,))
    err, err_max = row_error(w, q, scale), row_error(w, q_max, scale_max)
    assert (err <= err_max).all()
    assert (err < 0.99 * err_max).sum() >= 16  # the search really clips the heavy-tailed rows
    # keeping the row max: s = max(max|w| / 31, 1/31) in fp16
    assert torch.equal(scale_max, (w.abs().amax(dim=1) / 31).clamp_min(1 / 31).half())
    assert torch.equal(scale[32:40], torch.full((8,), 1 / 31).half())  # the floor
    # each row keeps the best of the candidates {0.999, 0.9995, 0.9999, 0.99999, 1.0}, s = max(clip/31, 1/31)
    candidates = []
    for quantile in (0.999, 0.9995, 0.9999, 0.99999, 1.0):
        s = (torch.quantile(w.abs(), quantile, dim=1) / 31).clamp_min(1 / 31).half()
        cq = torch.clamp(torch.round(w / s.float()[:, None]), -31, 31)
        candidates.append((s, row_error(w, cq, s)))
    best = torch.stack([e for _, e in candidates]).min(dim=0).values
    assert torch.allclose(err, best, rtol=1e-6)
    for row in range(w.shape[0]):
        assert any(s[row] == scale[row] for s, _ in candidates), row
    assert q.dtype == torch.int8 and int(q.abs().max()) <= 31


def test_dequantise_restores_names_shapes_and_dtypes():
    model = make_model(MID)
    template = model.state_dict()
    counts = torch.arange(70_000)  # a large non-float tensor: passthrough, as it is
    container = tg.quantize_state_dict(dict(template, counts=counts))
    assert container["m"]["counts"] == "passthrough" and torch.equal(container["w"]["counts"], counts)
    assert tg.dequantize_state_dict(container, dict(template, counts=torch.zeros_like(counts)))["counts"].equal(counts)
    del container["w"]["counts"], container["m"]["counts"]
    kinds = {m if m == "passthrough" else m["type"] for m in container["m"].values()}
    assert kinds == {"passthrough", "int6", "int8"}
    restored = tg.dequantize_state_dict(container, template)
    assert list(restored) == list(template)
    for name, ref in template.items():
        assert restored[name].shape == ref.shape and restored[name].dtype == ref.dtype == torch.float32, name
        if container["m"][name] == "passthrough":
            assert torch.equal(restored[name], ref.half().float()), name  # fp16 storage, back to fp32
    model.load_state_dict(restored, strict=True)


# ----------------------------------------------------------------------------- disk round trip and refusal

def batch_loss(model) -> float:
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, TINY_VOCAB, (2, 33), generator=g)
    model.eval()
    with torch.no_grad():
        return model(x[:, :-1], x[:, 1:]).item()


def test_disk_round_trip_equals_in_memory_round_trip(tmp_path):
    source = make_model(MID, seed=1)
    container = tg.quantize_state_dict(source.state_dict())
    path = tmp_path / "final_model.int6.ptz"
    tg.atomic_write({path: tg.compress_artifact(container)})
    assert zstandard.ZstdDecompressor().decompress(path.read_bytes())  # really zstd

    from_disk = make_model(MID, seed=2)
    fresh_loss = batch_loss(from_disk)
    from_disk.load_state_dict(tg.dequantize_state_dict(tg.load_artifact(path), from_disk.state_dict()))
    in_memory = make_model(MID, seed=3)
    in_memory.load_state_dict(tg.dequantize_state_dict(container, in_memory.state_dict()))

    loss = batch_loss(from_disk)
    assert loss == batch_loss(in_memory)
    assert loss != fresh_loss  # the loading really replaced the fresh weights
    assert abs(loss - batch_loss(source)) < 0.05 * abs(batch_loss(source))  # and close to the source
    for (name, a), b in zip(from_disk.state_dict().items(), in_memory.state_dict().values()):
        assert torch.equal(a, b), name


MARKS = []


def _mark(value):
    MARKS.append(value)


class Payload:
    """Unpickling this calls _mark: it would show that code ran on load."""

    def __reduce__(self):
        return (_mark, ("code ran",))


class OrderedContainer(collections.OrderedDict):
    pass


def write_zstd(path: Path, obj) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(buffer.getvalue()))
    return path


def assert_refused(path, *words):
    with pytest.raises(tg.InputError) as excinfo:
        tg.load_artifact(path)
    message = str(excinfo.value)
    assert str(path) in message and "\n" not in message and "Traceback" not in message, message
    for word in words:
        assert word in message, message
    return message


def good_container():
    return tg.quantize_state_dict(make_model().state_dict())


@pytest.mark.parametrize("case", ["custom_class", "ordered_dict_subclass", "list_value", "tuple_value",
                                  "bad_meta", "wrong_keys", "not_a_dict"])
def test_load_refuses_anything_but_a_plain_container(tmp_path, case):
    container = good_container()
    name = next(iter(container["w"]))
    objects = {
        "custom_class": {"w": dict(container["w"], evil=Payload()), "m": container["m"]},
        "ordered_dict_subclass": OrderedContainer(container),
        "list_value": {"w": dict(container["w"], **{name: [container["w"][name]]}), "m": container["m"]},
        "tuple_value": {"w": dict(container["w"], **{name: (container["w"][name],)}), "m": container["m"]},
        "bad_meta": {"w": container["w"], "m": dict(container["m"], **{name: {"type": "int4"}})},
        "wrong_keys": {"weights": container["w"], "meta": container["m"]},
        "not_a_dict": [container["w"], container["m"]],
    }
    path = write_zstd(tmp_path / "artifact.ptz", objects[case])
    MARKS.clear()
    assert_refused(path, "refused")
    assert MARKS == []  # nothing ran
    # the same container without the defect loads
    assert tg.load_artifact(write_zstd(tmp_path / "good.ptz", container))["m"] == container["m"]


def test_load_refuses_truncated_and_non_zstd_files(tmp_path):
    path = tmp_path / "final_model.int6.ptz"
    blob = tg.compress_artifact(good_container())
    path.write_bytes(blob)
    assert tg.load_artifact(path)
    path.write_bytes(blob[:len(blob) // 2])
    assert_refused(path, "zstd")
    raw = io.BytesIO()
    torch.save(good_container(), raw)  # a plain torch.save, not compressed: named for what it is
    path.write_bytes(raw.getvalue())
    assert_refused(path, "is a torch.save file (the raw weights, final_model.pt?)")
    path.write_bytes(b"not an artifact at all\n" * 50)
    assert_refused(path, "zstd")
    with pytest.raises(tg.InputError, match="does not exist"):
        tg.load_artifact(tmp_path / "missing.ptz")


def test_dequantise_into_a_different_model_names_the_tensor():
    container = tg.quantize_state_dict(make_model(MID).state_dict())
    template = make_model(TINY).state_dict()  # same names, other widths
    assert set(template) == set(container["m"])
    first_bad = next(n for n, t in template.items() if t.shape != make_model(MID).state_dict()[n].shape)
    with pytest.raises(tg.InputError, match=re.escape(first_bad)):
        tg.dequantize_state_dict(container, template)
    deeper = make_model(dict(TINY, num_layers="6", xsa_last_n="2", ve_layers="4,5")).state_dict()
    with pytest.raises(tg.InputError, match=r"blocks\.4\."):  # names the missing tensors
        tg.dequantize_state_dict(tg.quantize_state_dict(make_model().state_dict()), deeper)
    broken = {"w": dict(container["w"]), "m": container["m"]}
    del broken["w"]["blocks.0.mlp.fc.weight.scale"]
    with pytest.raises(tg.InputError, match=re.escape("blocks.0.mlp.fc.weight")):
        tg.dequantize_state_dict(broken, make_model(MID).state_dict())


# ----------------------------------------------------------------------------- writing the model pair

class DiskFull(OSError):
    def __init__(self):
        super().__init__(28, "No space left on device")


def _disk_full(*args, **kwargs):
    raise DiskFull()


class HalfWriter:
    """A file whose write() puts half the bytes on disk and then fails as a full disk does."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        raise DiskFull()

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.parametrize("failure", ["partial_write", "fsync", "replace"])
@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_keeps_the_old_pair_of_model_files(tmp_path, monkeypatch, failure, existing):
    """save_model writes final_model.pt and the artifact both or neither: a failure anywhere in the
    writes is a RunError naming the file, and leaves what was there (or nothing), no temporary file."""
    args = tiny_args(passthrough_max_numel=256)
    weights = make_model().state_dict()
    monkeypatch.chdir(tmp_path)
    old = {tg.RAW_MODEL_PATH: b"an older raw model", tg.ARTIFACT_PATH: b"an older artifact"}
    if existing:
        for path, data in old.items():
            path.write_bytes(data)
    if failure == "partial_write":
        monkeypatch.setattr(tg, "open", lambda *a, **k: HalfWriter(open(*a, **k)), raising=False)
    elif failure == "fsync":
        monkeypatch.setattr(tg.os, "fsync", _disk_full)
    else:
        monkeypatch.setattr(tg.os, "replace", _disk_full)
    log = []
    with pytest.raises(tg.RunError, match=r"^cannot write final_model\.pt: No space left on device; nothing was written$"):
        tg.save_model(weights, tg.ARTIFACT_PATH, args, ONE, log.append)
    left = sorted(p.name for p in tmp_path.iterdir())
    if existing:
        assert left == sorted(p.name for p in old) and all(p.read_bytes() == d for p, d in old.items())
    else:
        assert left == []  # neither file nor a temporary one
    assert log == []
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    tg.save_model(weights, tg.ARTIFACT_PATH, args, ONE, log.append)  # without the failure both are written
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in old)
    assert tg.load_artifact(tg.ARTIFACT_PATH)["m"] == tg.quantize_state_dict(weights, 256)["m"]
    assert torch.load(tg.RAW_MODEL_PATH, weights_only=True).keys() == weights.keys()
    assert log[-2] == "quantized_tensors: int6:24 int8:3 passthrough:24"  # 4 blocks x 6 matrices, 3 tables
    assert re.fullmatch(r"quantize:clip time:\d+ms", log[-1])


# ----------------------------------------------------------------------------- main(): size, limit, final_model.pt

def code_size() -> int:
    return len(Path(tg.__file__).read_bytes())


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory):
    """One tiny training run through main() (the environment of tiny_env, TTT off): its directory,
    log lines and the sizes of train_gpt.py before and after (other engineers may edit it meanwhile)."""
    cwd = tmp_path_factory.mktemp("run")
    env = tiny_run_env(tiny_data, TTT_ENABLED="0")
    with pytest.MonkeyPatch.context() as mp:
        apply_env(mp, env)
        mp.chdir(cwd)
        before = code_size()
        tg.main()
        after = code_size()
    return cwd, run_lines(cwd / "logs" / "tiny.txt"), {before, after}, env


def test_main_logs_the_submission_size(trained_run):
    cwd, lines, code_sizes, _ = trained_run
    artifact = cwd / "final_model.int6.ptz"
    n = int(one(lines, r"Serialized model int6\+zstd: (\d+) bytes")[1])
    total = int(one(lines, r"Total submission size int6\+zstd: (\d+) bytes")[1])
    assert n == artifact.stat().st_size
    assert total - n in code_sizes
    assert int(one(lines, r"Serialized model: (\d+) bytes")[1]) == (cwd / "final_model.pt").stat().st_size
    assert not any(line.startswith("ERROR") for line in lines)
    assert sorted(p.name for p in cwd.iterdir()) == ["final_model.int6.ptz", "final_model.pt", "logs"]  # no temp files
    one(lines, r"final_int6_roundtrip_exact val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8}")


def test_final_model_pt_holds_the_averaged_weights(trained_run, tiny_data):
    cwd, lines, _, env = trained_run
    raw = torch.load(cwd / "final_model.pt", map_location="cpu", weights_only=True)
    args = tiny_args(seed=env.get("SEED", "1337"))
    model = tg.build_model(args)
    model.load_state_dict(raw, strict=True)
    assert set(raw) == set(model.state_dict()) and all(t.dtype == torch.float32 for t in raw.values())
    # the artifact is the quantisation of exactly these weights
    container = tg.load_artifact(cwd / "final_model.int6.ptz")
    expected = tg.quantize_state_dict(raw, args.passthrough_max_numel)
    assert container["m"] == expected["m"] and set(container["w"]) == set(expected["w"])
    for name, t in expected["w"].items():
        assert torch.equal(container["w"][name], t), name
    restored = tg.dequantize_state_dict(container, model.state_dict())
    for name, t in raw.items():  # (the quantised tensors' error bound has its own test above)
        if container["m"][name] == "passthrough":
            assert torch.allclose(restored[name], t, rtol=1e-3, atol=1e-6), name
    # and they are the averaged weights the run evaluated (DIAGNOSTIC post_ema), not the initial ones
    token_bytes = tg.TokenBytes(tg.load_tokenizer(env["TOKENIZER_PATH"], TINY_VOCAB))
    val = tg.load_validation_tokens(tg.list_shards(tiny_data, "val"), args.eval_seq_len)
    val_loss, _ = tg.evaluate(model, val, token_bytes, args, ONE)
    logged = float(one(lines, r"DIAGNOSTIC post_ema val_loss:([\d.]+) val_bpb:[\d.]+ eval_time:\d+ms")[1])
    assert val_loss == pytest.approx(logged, abs=1e-4)
    assert not torch.equal(raw["blocks.0.attn.c_q.weight"], tg.build_model(args).state_dict()["blocks.0.attn.c_q.weight"])


def test_main_over_the_limit_logs_an_error_evaluates_and_raises(tiny_env, monkeypatch):
    monkeypatch.setenv("ITERATIONS", "2")
    monkeypatch.setenv("WARMDOWN_ITERS", "1")
    monkeypatch.setenv("TTT_ENABLED", "0")
    monkeypatch.setattr(tg, "SUBMISSION_LIMIT_BYTES", 1000)
    monkeypatch.setenv("ALLOW_OVER_LIMIT", "1")  # past the estimate at start: the real size is checked too
    with pytest.raises(tg.RunError) as excinfo:
        tg.main()
    message = str(excinfo.value)
    assert "1000" in message and "limit" in message
    lines = run_lines(Path("logs/tiny.txt"))
    total = int(one(lines, r"Total submission size int6\+zstd: (\d+) bytes")[1])
    assert str(total) in message
    assert lines[-1] == f"ERROR: {message}"  # the run's last line
    error = lines.index(one(lines, r"ERROR: .*1000.* evaluating anyway.*").string)
    assert error > lines.index(f"Total submission size int6+zstd: {total} bytes")
    for name in ("final_int6_roundtrip", "final_int6_sliding_window"):  # evaluations still ran, after the error
        assert lines.index(one(lines, rf"{name}_exact val_loss:[\d.]+ val_bpb:[\d.]+").string) > error
    assert Path("final_model.int6.ptz").is_file()


def test_limit_is_exclusive_in_eval_only_mode(trained_run, tmp_path, monkeypatch):
    """A total at the limit is an error; one byte below it is not (checked with EVAL_ARTIFACT)."""
    cwd, _, _, env = trained_run
    apply_env(monkeypatch, env)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVAL_ARTIFACT", str(cwd / "final_model.int6.ptz"))
    monkeypatch.setenv("EVAL_STRIDE", "32")  # speed: this test is about the limit
    total = (cwd / "final_model.int6.ptz").stat().st_size + code_size()
    monkeypatch.setattr(tg, "SUBMISSION_LIMIT_BYTES", total + 1)
    monkeypatch.setenv("RUN_ID", "below")
    tg.main()
    assert not any(line.startswith("ERROR") for line in run_lines(Path("logs/below.txt")))
    monkeypatch.setattr(tg, "SUBMISSION_LIMIT_BYTES", total)
    monkeypatch.setenv("RUN_ID", "at")
    with pytest.raises(tg.RunError, match=str(total)):
        tg.main()
    assert any(line.startswith("ERROR") for line in run_lines(Path("logs/at.txt")))
