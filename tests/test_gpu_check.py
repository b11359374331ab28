"""scripts/gpu_check.py: the whole sequence (preflight, each configuration's run, reread and evaltime,
the table and verdict) at smoke size on the CPU, once for the module; a run that fails, a reread that
scores otherwise, a stage past its time, a budget too small and bad input each fail the check naming
what; the arithmetic of the projections and of the verdict; the GPU sizes put every phase of a run
inside its short training loop, however fast the GPU."""
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

import train_gpt as tg
from conftest import REPO, clean_environ, make_sample, run_lines, run_script

sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402  (imported by name: its dataclasses need a module in sys.modules)
SCRIPT = [sys.executable, str(REPO / "scripts" / "gpu_check.py")]
RECORD, BEYOND = REPO / "configs" / "record.env", REPO / "configs" / "beyond.env"
SILENT = lambda *_: None  # noqa: E731  (echo of a Check whose lines the test does not read)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """The bundled sample's format and vocabulary (smoke.env's 1024 pieces), from a part of its text."""
    out = tmp_path_factory.mktemp("sample")
    make_sample().build_sample(out, vocab_size=1024, max_chars=400_000)
    return out


def data_env(sample: Path) -> dict:
    return dict(DATA_PATH=str(sample), TOKENIZER_PATH=str(sample / "sample_1024_bpe.model"))


def check_env(sample: Path, **extra) -> dict:
    return clean_environ(**{**data_env(sample), "OMP_NUM_THREADS": "1", **extra})


@pytest.fixture(scope="module")
def smoke(sample, tmp_path_factory):
    """One `gpu_check.py --smoke` over configs/ (record.env, beyond.env, sp8192.env): its result and output folder."""
    out = tmp_path_factory.mktemp("gpu_check")
    result = run_script(SCRIPT + ["--smoke", "--out", str(out)], check_env(sample), cwd=out, timeout=900)
    return result, out


def table(text: str) -> dict[str, list[str]]:
    """{row label: cells} of the printed table (the header row under '')."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def test_smoke_runs_every_stage_and_passes(smoke):
    result, out = smoke
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    stages = ["preflight", "run:record", "reread:record", "run:beyond", "reread:beyond", "run:sp8192", "reread:sp8192",
              "evaltime:record", "evaltime:beyond", "evaltime:sp8192"]
    for stage in stages:
        assert re.search(rf"^gpu_check: {stage} ok in [\d.]+ s$", result.stdout, re.M), stage
    order = [m[1] for m in re.finditer(r"^gpu_check: (\S+) ok in", result.stdout, re.M) if not m[1].startswith("data")]
    assert order == stages  # every run and reread before any evaltime (the data's stages first, where it is built)
    summary = (out / "summary.md").read_text()
    assert summary.strip() in result.stdout
    assert summary.strip().splitlines()[-1] == ("verdict: PASSED: every stage ran and passed; --smoke: the projections "
                                                "are of CPU timings and are not judged")
    assert "preflight: all checks passed" in (out / "preflight.out").read_text()
    for config in ("record", "beyond"):
        for stage in ("run", "reread", "evaltime"):
            assert run_lines(out / config / "logs" / f"{stage}.txt"), (config, stage)
            assert (out / config / f"{stage}.out").read_text().strip()
        assert (out / config / "final_model.int6.ptz").is_file()
    rows = table(summary)
    assert rows[""] == ["record", "beyond", "sp8192"]
    assert all(re.fullmatch(r"run ok \d+ s, reread ok \d+ s, evaltime ok \d+ s", c) for c in rows["stages"])
    assert rows["reread (EVAL_ARTIFACT): roundtrip"] == ["the run's line"] * 3
    assert rows["validation targets: run and reread / evaltime"] == ["2,048 / 3,072"] * 3
    assert rows["peak memory, MiB allocated / reserved"] == ["—"] * 3  # a CPU run logs none
    assert rows["GPTQ calibration"][0] == "—" and re.match(r"[\d.]+ s for 16 sequences \(train\); 64 per rank on 8 GPUs",
                                                            rows["GPTQ calibration"][1])
    assert re.fullmatch(r"clip [\d.]+ s", rows["quantisation"][0]) and re.fullmatch(r"gptq [\d.]+ s", rows["quantisation"][1])
    projected = r"[\d,.]+ s \(first call [\d.]+ s \+ [\d.]+ µs/target\)"
    assert all(re.fullmatch(projected, c) for c in rows["roundtrip: all 62,021,632 targets on 8 GPUs"])  # from the run
    for short in ("sliding", "TTT"):  # two timings of CPU evaluations a few seconds long: noise may hide the difference
        cells = rows[f"{short}: all 62,021,632 targets on 8 GPUs"]
        assert all(re.fullmatch(projected, c) or c == "not resolved: more targets took no longer" for c in cells), cells


def test_the_runs_go_through_every_phase_and_the_rereads_match(smoke):
    _, out = smoke
    record, beyond = (run_lines(out / name / "logs" / "run.txt") for name in ("record", "beyond"))
    logs = {name: gpu_check.summarize_logs.parse_log(out / name / "logs" / "run.txt") for name in ("record", "beyond")}
    for lines, log in ((record, logs["record"]), (beyond, logs["beyond"])):
        assert gpu_check.missing_phases(log, lines) == []
        assert lines[-1].startswith("final_ttt_exact ")
        roundtrip = [line for line in lines if line.startswith("final_int6_roundtrip_exact ")]
        assert len(roundtrip) == 1
    assert not any(line.startswith("recurrence:") for line in record)
    assert "recurrence:enabled step:4 layers:4,5 virtual_layers:13" in beyond  # switched on mid-run (8 steps)
    assert any(line.startswith("gptq:calibration source:train ") for line in beyond)
    assert any(line.startswith("Serialized model int6+brotli: ") for line in beyond)
    hp = logs["beyond"]["hyperparameters"]
    assert (hp["parallel_from"], hp["loader"], hp["recur_layers"], hp["model_dim"], hp["iterations"]) == (7, "coprime", [4, 5], 64, 8)
    for name in ("record", "beyond"):
        run, reread = (run_lines(out / name / "logs" / f"{stage}.txt") for stage in ("run", "reread"))
        same = [[line for line in lines if line.startswith("final_int6_roundtrip_exact ")] for lines in (run, reread)]
        assert same[0] == same[1] and same[0]
        assert any(line.startswith("eval_artifact:") for line in reread)


def test_the_table_gives_the_logs_figures(smoke):
    """Step time from the step lines, final figures from the _exact lines, bytes from the artifact line, and the
    repeats' step time from the steps after the switch."""
    result, out = smoke
    rows = table(result.stdout)
    for column, name in enumerate(("record", "beyond")):
        log = gpu_check.summarize_logs.parse_log(out / name / "logs" / "run.txt")
        times = {step: ms for step, _, ms in log["train_curve"]}
        last = 4 if name == "beyond" else 8  # beyond's repeats switch on after step 4
        assert float(rows["ms per step, 1 GPU, 8 micro-batches"][column].replace(",", "")) == pytest.approx(
            (times[last] - times[1]) / (last - 1), abs=0.051)  # printed to 0.1 ms
        finals = " / ".join(f"{log[f'{k}_val_bpb']:.5f}" for k in ("roundtrip", "sliding", "ttt"))
        assert rows["val_bpb roundtrip / sliding / TTT"][column] == finals
        assert rows["artifact bytes (a short run's, not a real run's size)"][column] == f"{log['model_bytes']:,}"
    times = {step: ms for step, _, ms in gpu_check.summarize_logs.parse_log(out / "beyond" / "logs" / "run.txt")["train_curve"]}
    repeats = rows["ms per step with the repeats on"]
    assert repeats[0] == "—"
    assert re.match(r"[\d,.]+ \([+-][\d.]+ %\), RECUR_LAYERS=4,5 \(forced\) from step 5$", repeats[1])
    assert float(repeats[1].split()[0].replace(",", "")) == pytest.approx((times[8] - times[5]) / 3, abs=0.051)


def test_a_failing_run_fails_the_check_naming_it(sample, tmp_path):
    """A configuration whose training diverges: the run exits 1 with its own line, its reread and evaltime are
    skipped, the verdict names the stage and the exit status is 1."""
    bad = tmp_path / "diverges.env"
    bad.write_text(RECORD.read_text() + "MATRIX_LR=1e9\nTIED_EMBED_LR=1e9\n")
    result = run_script(SCRIPT + ["--smoke", "--skip-preflight", "--config", str(bad), "--out", str(tmp_path / "out")],
                        check_env(sample), cwd=tmp_path, timeout=300)
    assert result.returncode == 1, result.stdout[-3000:]
    verdict = result.stdout.strip().splitlines()[-2]
    assert verdict.startswith("verdict: NOT PASSED: FAILED: run:diverges (error: training loss is not finite at step "), verdict
    assert "skipped: reread:diverges (run:diverges did not pass); evaltime:diverges (run:diverges did not pass)" in verdict
    assert (tmp_path / "out" / "summary.md").read_text().strip().splitlines()[-1] == verdict
    assert run_lines(tmp_path / "out" / "diverges" / "logs" / "run.txt")[-1].startswith("ERROR: training loss is not finite")
    rows = table(result.stdout)  # the failed run's figures, as far as it went
    assert re.fullmatch(r"run FAILED \d+ s, reread skipped, evaltime skipped", rows["stages"][0])
    assert re.fullmatch(r"[\d.]+ s: 4 steps, compilation ≈ [\d.]+ s", rows["warm-up priming (compiles every graph)"][0])


def test_a_reread_that_scores_otherwise_fails(smoke, sample, tmp_path):
    """The reread stage on the smoke run's record folder, its artifact altered (the tied embedding's row scales x1.5,
    which the output head reads too): EVAL_ARTIFACT really scores it, and the comparison with the run's line fails
    the stage."""
    _, out = smoke
    shutil.copytree(out / "record", tmp_path / "record")
    artifact = tmp_path / "record" / "final_model.int6.ptz"
    container = tg.load_artifact(artifact)
    assert container["m"]["tok_emb.weight"] == {"type": "int8"}
    container["w"]["tok_emb.weight.scale"] = container["w"]["tok_emb.weight.scale"] * 1.5
    artifact.write_bytes(tg.compress_artifact(container))

    check = gpu_check.Check(gpu_check.parse_args(["--smoke", "--out", str(tmp_path)]), gpu_check.SMOKE_MODE, echo=SILENT)
    config = gpu_check.read_configs([str(RECORD)])[0]
    settings = gpu_check.run_settings(config, gpu_check.SMOKE_MODE, data_env(sample), 0)
    outcome = gpu_check.Outcome(config, settings, gpu_check.Stage("run:record", status="ok"),
                                gpu_check.Stage("reread:record"), gpu_check.Stage("evaltime:record"))
    gpu_check.read_run(outcome, tmp_path / "record" / "logs" / "run.txt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        stage = check.eval_only(outcome, "reread", gpu_check.SMOKE_VAL_TOKENS[0])
    run_line = outcome.figures["roundtrip_line"]
    reread_line = next(line for line in run_lines(tmp_path / "record" / "logs" / "reread.txt")
                       if line.startswith("final_int6_roundtrip_exact "))
    assert reread_line != run_line
    assert stage.status == "FAILED"
    assert stage.detail == f"the artifact read back scores otherwise: run '{run_line}', reread '{reread_line}'"


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_a_stage_past_its_time_is_stopped_with_all_its_processes(tmp_path):
    sleeper = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
               "print('child', child.pid, flush=True); time.sleep(120)")
    stage = gpu_check.Stage("run:hangs")
    returncode = gpu_check.run_stage(stage, [sys.executable, "-c", sleeper], clean_environ(), tmp_path, tmp_path / "hangs.out",
                                     timeout=3, on_timeout=("FAILED", "--stage-timeout 3 s"), echo=SILENT)
    assert returncode is None and stage.status == "FAILED"
    assert re.fullmatch(r"stopped after \d+ s: --stage-timeout 3 s", stage.detail)
    child = int(stage.lines[0][1].split()[1])
    deadline = time.monotonic() + 5  # signals arrive at once, the kernel may take a moment to end the process
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)  # the whole process group went, not only the stage's own process
    assert (tmp_path / "hangs.out").read_text() == f"child {child}\n"


def test_the_budget_skips_what_it_cannot_fit_and_stops_what_runs_past_it(sample, tmp_path):
    now = [0.0]
    budget = gpu_check.Budget(100, dict(run=30), clock=lambda: now[0])
    assert budget.need("run") == 30 and budget.need("reread") == 0
    budget.record("run", 50)
    now[0] = 60
    assert budget.need("run") == 50 and budget.left() == 40  # the longest of its kind so far

    check = gpu_check.Check(gpu_check.parse_args(["--smoke", "--budget", "2", "--out", str(tmp_path)]), gpu_check.SMOKE_MODE,
                            echo=SILENT)
    stage = gpu_check.Stage("run:slow")
    check.execute(stage, "run", [sys.executable, "-c", "import time; time.sleep(60)"], clean_environ(), tmp_path,
                  tmp_path / "slow.out")
    assert stage.status == "stopped" and re.fullmatch(r"stopped after \d+ s: the 2 s budget ran out", stage.detail)

    result = run_script(SCRIPT + ["--smoke", "--skip-preflight", "--budget", "3", "--config", str(RECORD), "--out",
                                  str(tmp_path / "out")], check_env(sample), cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert re.search(r"^verdict: NOT PASSED: skipped: run:record \(\d s of the 3 s budget left, about 5 s needed\); "
                     r"reread:record \(run:record did not pass\); evaltime:record \(run:record did not pass\)", result.stdout, re.M)
    assert not (tmp_path / "out" / "record" / "logs").exists()  # nothing ran


def test_bad_input_is_one_line(sample, tmp_path):
    out = ["--out", str(tmp_path / "out")]
    cases = [(["--smoke", "--config", str(tmp_path / "none.env")] + out, {}, rf"--config {tmp_path / 'none.env'}: no such file"),
             (["--smoke", "--config", str(tmp_path / "bad.env")] + out, {}, r".*bad\.env:2: not VAR=VALUE: 'MODEL_DIM 512'"),
             (["--smoke", "--config", str(RECORD), "--config", str(tmp_path / "sub" / "record.env")] + out, {},
              "two configurations share a name: record, record .*"),
             (["--smoke", "--skip-preflight"] + out, dict(TOKENIZER_PATH=""), "set both DATA_PATH and TOKENIZER_PATH, or neither"),
             (["--smoke", "--out", str(tmp_path / "file" / "out")], {}, rf"cannot write {tmp_path / 'file' / 'out'}: Not a directory"),
             (out, dict(CUDA_VISIBLE_DEVICES=""), r"no CUDA device: this check runs on one GPU \(--smoke runs the same sequence on the CPU\)")]
    (tmp_path / "bad.env").write_text("# a comment\nMODEL_DIM 512\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "file").write_text("a file where a folder should be")
    shutil.copy2(RECORD, tmp_path / "sub" / "record.env")
    for argv, extra, message in cases:
        result = run_script(SCRIPT + argv, check_env(sample, **extra), cwd=tmp_path, timeout=120)
        assert result.returncode == 1, (argv, result.stdout[-2000:])
        assert re.fullmatch(rf"gpu_check: error: {message}\n", result.stderr), (argv, result.stderr)
        assert not (tmp_path / "out" / "summary.md").exists()


def test_data_that_cannot_be_built_fails_the_check(tmp_path, monkeypatch, capsys):
    """Where the data is missing its builder runs first, as the stage `data`; when it fails, nothing else runs."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "make_sample.py").write_text("import sys\nprint('make_sample: error: no room', file=sys.stderr)\nsys.exit(1)\n")
    monkeypatch.setattr(gpu_check, "REPO", tmp_path)  # where the data and its builder are looked for
    for name in ("DATA_PATH", "TOKENIZER_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert gpu_check.main(["--smoke", "--out", str(tmp_path / "out")]) == 1
    printed = capsys.readouterr().out
    assert "[data] make_sample: error: no room" in printed
    assert printed.splitlines()[-2] == "verdict: NOT PASSED: FAILED: data (exit 1: make_sample: error: no room)"
    assert (tmp_path / "out" / "data.out").read_text() == "make_sample: error: no room\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["data.out", "summary.md"]


def test_projections_and_step_counts():
    p = gpu_check.project(1000, 2.0, 3000, 4.0)
    assert (p.first_call, p.per_target) == pytest.approx((1.0, 0.001))
    assert p.full == pytest.approx(1.0 + 0.001 * 62_021_632 / 8)
    assert gpu_check.project(1000, 2.0, 3000, 2.0) is None and gpu_check.project(1000, 2.0, 1000, 3.0) is None
    assert gpu_check.project(1000, 1.0, 2000, 3.0).first_call == 0.0  # a first call is never negative
    assert gpu_check.steps_in(600_000, 640.0) == pytest.approx(7500)  # 80 ms per step on each of 8 GPUs
    assert gpu_check.steps_in(600_000, 640.0, 800.0, 3000) == pytest.approx(3000 + 360_000 / 100)
    assert gpu_check.steps_in(100_000, 640.0, 800.0, 3000) == pytest.approx(1250)  # the switch never comes
    assert gpu_check.rate([(1, 500.0), (5, 2500.0), (8, 4000.0)]) == pytest.approx(500.0)
    assert gpu_check.rate([(1, 500.0)]) is None


def test_the_verdict_judges_the_budgets_of_gpu_runs_only(tmp_path):
    gpu, smoke = (gpu_check.Check(gpu_check.parse_args(["--out", str(tmp_path)]), mode, echo=SILENT)
                  for mode in (gpu_check.GPU_MODE, gpu_check.SMOKE_MODE))
    config = gpu_check.read_configs([str(BEYOND)])[0]

    def verdict(check, total: float | None, steps: float):
        outcome = gpu_check.Outcome(config, {}, *(gpu_check.Stage(n, status="ok") for n in ("run:b", "reread:b", "evaltime:b")))
        return gpu_check.judge(check, [outcome], {config.name: dict(total=total, steps=steps)})

    text, passed = verdict(gpu, 700.0, 6000.0)
    assert not passed and text.startswith("verdict: NOT PASSED: over budget by projection: beyond: evaluations 700 s > 600 s")
    assert text.endswith("note: beyond: 6,000 steps in its training time, fewer than the record's 7,034")
    text, passed = verdict(gpu, 300.0, 7500.0)
    assert passed and text == ("verdict: PASSED: every stage ran and passed; by projection every configuration's "
                               "evaluations fit 600 s on 8 GPUs")
    assert verdict(gpu, None, 7500.0) == ("verdict: NOT PASSED: evaluation budget not projected: beyond", False)
    text, passed = verdict(smoke, 70_000.0, 50.0)
    assert passed and text.endswith("--smoke: the projections are of CPU timings and are not judged")
    gpu.stages.append(gpu_check.Stage("run:x", status="FAILED", detail="exit 1"))
    assert verdict(gpu, 300.0, 7500.0) == ("verdict: NOT PASSED: FAILED: run:x (exit 1)", False)


def schedule(args, step_ms: float, slowdown: float) -> dict:
    """The steps at which train() switches each phase on, for a GPU taking step_ms per step (slowdown x that
    with the repeats on): lr_scale's warmdown in time, the wallclock stop, the SWA and burst triggers."""
    step, elapsed, recurring, events = 0, 0.0, False, dict(swa=0, burst=0, qat=None, soft_round=None, recurrence=None)
    while elapsed < 1000 * args.train_seconds:
        scale = tg.lr_scale(step, elapsed, args)
        if args.recur_layers and not recurring and step >= args.recur_step:
            recurring, events["recurrence"] = True, step
        for name, threshold in (("qat", args.late_qat_threshold), ("soft_round", args.soft_round_threshold)):
            if events[name] is None and scale < threshold:
                events[name] = step
        events["burst"] += scale < args.ttt_burst_trigger
        step, elapsed = step + 1, elapsed + step_ms * (slowdown if recurring else 1.0)
        events["swa"] += scale < args.swa_trigger and step % args.swa_every == 0
    return dict(events, steps=step)


@pytest.mark.parametrize("step_ms", [300.0, 620.0, 1000.0])
def test_the_gpu_sizes_put_every_phase_inside_the_short_run(step_ms):
    """With the GPU settings, for a step of 300, 620 (one H200) or 1000 ms: late QAT switches on after at least one
    step without it, soft-round for at least 2 steps, the burst fills, SWA takes snapshots, a validation falls
    mid-run, and the repeats (beyond.env, forced) switch on mid-run."""
    data = dict(DATA_PATH="data", TOKENIZER_PATH="tok.model")
    for path in (RECORD, BEYOND):
        config = gpu_check.read_configs([str(path)])[0]
        settings = gpu_check.run_settings(config, gpu_check.GPU_MODE, data, gpu_check.recurrence_step(step_ms))
        args = tg.Hyperparameters(**{k.lower(): v for k, v in settings.items()})
        assert args.train_seconds == gpu_check.GPU_TRAIN_SECONDS and args.val_tokens == 131_072 and args.warmup_steps >= 4
        assert (args.num_layers, args.model_dim, args.train_batch_tokens, args.ttt_chunk_tokens) == (11, 512, 786_432, 32_768)
        slowdown = gpu_check.RECURRENCE_SLOWDOWN if config.forced_recurrence else 1.0
        events = schedule(args, step_ms * (1.1 if config.forced_recurrence else 1.0), slowdown)
        assert 0 < events["qat"] < events["soft_round"] <= events["steps"] - 2, events
        assert events["burst"] >= args.ttt_burst_steps and events["swa"] >= 2, events
        assert 0 < args.val_loss_every < events["steps"], events
        if path == BEYOND:
            assert args.recur_layers == (4, 5) and args.allow_over_limit and args.max_wallclock_seconds == 25 + 14
            assert 0 < events["recurrence"] < events["steps"] - 2, events
        else:
            assert args.recur_layers == () and not args.allow_over_limit and args.max_wallclock_seconds == 25


def test_tolerated_preflight_failures_pass_the_stage_and_no_others():
    def preflight(*lines: str) -> gpu_check.Stage:
        return gpu_check.Stage("preflight", status="FAILED", detail=lines[-1], lines=[(0.0, line) for line in lines])

    stage = preflight("FAIL     flash_attn_3: flash_attn_interface does not import", "preflight: FAILED: flash_attn_3")
    gpu_check.tolerate_preflight(stage, 1, ["flash_attn_3"])
    assert (stage.status, stage.detail) == ("ok", "failed checks tolerated (--tolerate): flash_attn_3")
    for tolerated, lines in ((["flash_attn_3"], ["preflight: FAILED: data, flash_attn_3"]),
                             ([], ["preflight: FAILED: flash_attn_3"]),
                             (["flash_attn_3"], ["Traceback (most recent call last):"])):  # a crash, no summary line
        stage = preflight(*lines)
        gpu_check.tolerate_preflight(stage, 1, tolerated)
        assert (stage.status, stage.detail) == ("FAILED", lines[-1])


def test_the_data_is_the_environments_else_fineweb_else_the_proxy(sample, tmp_path, monkeypatch):
    """On a GPU: DATA_PATH and TOKENIZER_PATH (made absolute), else FineWeb of the configuration's vocabulary where
    downloaded, else the proxy corpus of that vocabulary, with its builder's command where it is not built; --smoke:
    the environment's, else the sample of that vocabulary. The environment's data only for its tokenizer's vocabulary."""
    tokenizer_1024 = sample / "sample_1024_bpe.model"
    monkeypatch.setattr(gpu_check, "REPO", tmp_path)
    for name in ("DATA_PATH", "TOKENIZER_PATH"):
        monkeypatch.delenv(name, raising=False)
    gpu, smoke = gpu_check.GPU_MODE, gpu_check.SMOKE_MODE
    for vocab, suffix in ((1024, ""), (8192, "_sp8192")):
        proxy = (tmp_path / "data" / f"proxy{suffix}", tmp_path / "data" / f"proxy{suffix}" / f"proxy_{vocab}_bpe.model")
        sample = (tmp_path / "data" / f"sample{suffix}", tmp_path / "data" / f"sample{suffix}" / f"sample_{vocab}_bpe.model")
        fineweb = (tmp_path / "data" / "datasets" / f"fineweb10B_sp{vocab}", tmp_path / "data" / "tokenizers" / f"fineweb_{vocab}_bpe.model")
        paths = lambda data: dict(DATA_PATH=str(data[0]), TOKENIZER_PATH=str(data[1]))  # noqa: E731
        build = lambda script: [sys.executable, str(tmp_path / "data" / script), "--vocab", str(vocab)]  # noqa: E731
        assert gpu_check.choose_data(gpu, vocab) == (paths(proxy), build("make_proxy.py"))
        assert gpu_check.choose_data(smoke, vocab) == (paths(sample), build("make_sample.py"))
        proxy[0].mkdir(parents=True)
        proxy[1].write_text("built")
        assert gpu_check.choose_data(gpu, vocab) == (paths(proxy), None)
        fineweb[0].mkdir(parents=True)
        fineweb[1].parent.mkdir(exist_ok=True)
        fineweb[1].write_text("downloaded")
        assert gpu_check.choose_data(gpu, vocab) == (paths(fineweb), None)
        assert gpu_check.choose_data(smoke, vocab) == (paths(sample), build("make_sample.py"))
    # the environment's data serves the configurations of its tokenizer's vocabulary; the others keep their own
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    shutil.copy2(tokenizer_1024, tmp_path / "mine" / "tok.model")
    monkeypatch.setenv("DATA_PATH", "mine")
    monkeypatch.setenv("TOKENIZER_PATH", "mine/tok.model")
    assert gpu_check.choose_data(gpu, 1024) == (dict(DATA_PATH=str(tmp_path / "mine"), TOKENIZER_PATH=str(tmp_path / "mine" / "tok.model")),
                                                None)
    assert gpu_check.choose_data(smoke, 8192) == (paths(sample), build("make_sample.py"))
    for tokenizer, message in (("mine/none.model", "TOKENIZER_PATH mine/none.model is not a file"),
                               ("mine", "TOKENIZER_PATH mine is not a file")):
        monkeypatch.setenv("TOKENIZER_PATH", tokenizer)
        with pytest.raises(gpu_check.CheckError, match=f"^{message}$"):
            gpu_check.choose_data(gpu, 1024)
    (tmp_path / "mine" / "text.model").write_text("not a model")
    monkeypatch.setenv("TOKENIZER_PATH", "mine/text.model")
    with pytest.raises(gpu_check.CheckError, match="^TOKENIZER_PATH mine/text.model is not a SentencePiece model: "):
        gpu_check.choose_data(gpu, 1024)


def test_a_run_that_skips_a_phase_it_should_go_through_fails():
    """The phases a log must show follow its hyperparameters: a run with late QAT on but no late_qat line (a
    schedule that never reached it) misses it; with LATE_QAT_THRESHOLD=0 nothing of QAT is expected."""
    lines = ["warmup_prime steps:4 time:10ms", "swa:start step:2", "ttt_burst:done", "weight_avg:ema decay:0.9",
             "DIAGNOSTIC post_ema val_loss:1 val_bpb:1 eval_time:1ms", "quantize:clip time:1ms",
             "Serialized model int6+zstd: 1 bytes", "final_int6_roundtrip_exact val_loss:1 val_bpb:1",
             "final_int6_sliding_window_exact val_loss:1 val_bpb:1", "final_ttt_exact val_loss:1 val_bpb:1"]
    hp = dict(tg.Hyperparameters.defaults(), recur_layers=[4, 5], quant_method="gptq")
    assert gpu_check.missing_phases(dict(hyperparameters=hp), lines) == ["late QAT", "soft-round", "recurrence mid-run",
                                                                         "GPTQ calibration"]
    hp.update(late_qat_threshold=0.0, recur_layers=[], quant_method="clip", ttt_enabled=False)
    assert gpu_check.missing_phases(dict(hyperparameters=hp), lines) == []
    assert gpu_check.missing_phases(dict(hyperparameters=hp), lines[1:]) == ["warm-up priming"]
