#!/usr/bin/env python3
"""The whole pipeline on one GPU in a few minutes, before paying for eight: one command that leaves a record.

    python scripts/gpu_check.py                          # one GPU: the preflight, then every configuration
    python scripts/gpu_check.py --tolerate flash_attn_3  # a GPU without FlashAttention-3 (attention on SDPA)
    python scripts/gpu_check.py --config configs/beyond.env --skip-preflight   # one configuration again
    python scripts/gpu_check.py --smoke                  # the same sequence at toy size on the CPU

Stages, in order, each a subprocess with its output kept:
  1. preflight        scripts/preflight.py with the first configuration (record.env by default);
  2. run:NAME         train_gpt.py with configs/NAME.env at full width and batch, shortened only in
                      length: a 25 s training loop (plus the configuration's GPTQ reserve),
                      WARMDOWN_ITERS=150 so that late QAT, soft-round, SWA and the burst happen inside
                      it, VAL_TOKENS=131,072 for the evaluations and TTT; every stage of a real run in its
                      order, each of which its log must show. Every configuration but record.env that
                      sets no recurrence of its own runs with RECUR_LAYERS=4,5 switched on mid-run;
  3. reread:NAME      EVAL_ARTIFACT on that artifact: its final_int6_roundtrip_exact line must be the run's;
  4. evaltime:NAME    EVAL_ARTIFACT again on 4x the targets. The sliding-window and TTT evaluations compile
                      in their first call in any process, so their time splits into that first call and a
                      part per target only through two sizes; the roundtrip's part per target comes from
                      the run, where the post-average evaluation has compiled its graph before it.
The runs and rereads of every configuration come before any evaltime stage: a crash matters more than
a projection. Then a table (one column per configuration) and a verdict line, printed and written to
OUT/summary.md beside each stage's output (OUT/preflight.out, OUT/NAME/run.out, OUT/NAME/logs/run.txt, ...).

Exit status 0 when every stage ran and passed and, on a GPU, every configuration's evaluations fit the
600 s evaluation budget on 8 GPUs by projection; 1 otherwise, the verdict naming each failed, stopped,
skipped or over-budget stage. A stage that runs past --stage-timeout is stopped and failed; one that runs
past what is left of --budget is stopped; one that what is left cannot fit (by the longest stage of its
kind so far) is skipped.

Data, per configuration's vocabulary: DATA_PATH and TOKENIZER_PATH from the environment when both are set
and the tokenizer has that many pieces; else FineWeb of that vocabulary at its default place where present;
else the proxy corpus (data/proxy or data/proxy_sp<V>, built by data/make_proxy.py when missing). --smoke
uses the bundled sample (data/sample or data/sample_sp<V>, built by data/make_sample.py) in place of FineWeb
and the proxy. Other hyperparameter variables of the environment are not used: the
configuration files define the runs.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
import proxy  # noqa: E402  (read_env_file: the one reader of configuration files)
import summarize_logs  # noqa: E402  (parse_log: the one reader of run logs)

CONFIGS = REPO / "configs"
RECORD_CONFIG = CONFIGS / "record.env"
SMOKE_ENV = REPO / "scripts" / "smoke.env"
OUT = REPO / "logs" / "gpu_check"

GPUS = 8  # the real run's; one GPU runs their 8 micro-batches one after another
FULL_VAL_TARGETS = 62_021_632  # FineWeb's validation targets, all scored by a real run
RECORD_STEPS = 7034  # the record's mean steps in 600 s on 8xH100 (7041, 7025, 7035)
EVAL_BUDGET_S = 600.0  # the evaluation's limit on 8xH100
REFERENCE_STEP_MS = 620.0  # one step of 8 micro-batches at full width on one H200 (docs/performance.md)
FORCED_RECURRENCE = "4,5"  # the later record's repeated blocks
RECURRENCE_SLOWDOWN = 1.2  # a configuration with the repeats runs about this much slower (+17 % measured)

# GPU: the record's run at full width and batch, shortened in length only. Why each value:
GPU_TRAIN_SECONDS = 25.0  # the training loop: about 40 steps of 620 ms, enough for every phase below
GPU_SHORTENING = dict(
    WARMUP_STEPS="4",  # primes every graph (QAT off and on, the repeats off and on); 20 would only repeat them
    WARMDOWN_ITERS="150",  # the warmdown (in time) spans the whole short run, so that late QAT (the last 22 steps'
    # worth), SWA and the burst (30) and soft-round (3) switch on however fast the GPU is; 3500 would put soft-round
    # at 0.02 x 3500 steps = 43 s before the end, before the run starts
    VAL_LOSS_EVERY="15",  # a validation mid-run, after which training goes on (as at step 4000 of a real run)
    TRAIN_LOG_EVERY="5",  # points for the step time, before and after the repeats switch on
    SWA_EVERY="5",  # a few SWA snapshots in the last 30 steps (50 would take none)
    TTT_BURST_STEPS="6",  # the burst replays 6 steps twice, 7 s; the default 100 would keep all 30 and take 37 s
)
GPU_VAL_TOKENS = (131_072, 524_288)  # run and reread; evaltime. 4 and 16 TTT chunks (the proxy has 17.8)

# --smoke: scripts/smoke.env (the record's topology at width 64, the same tensors quantised as at full
# size) with shorter sequences and batches and one TTT epoch per chunk (eager TTT is most of a CPU
# evaluation's time), and 8 steps whose warmdown goes through every phase: scale (8 - step) / 52 is
# 0.154 at step 0 (QAT off), 0.135 at step 1 (QAT on), 0.019 at step 7 (soft-round).
SMOKE_SIZES = dict(TRAIN_SEQ_LEN="64", EVAL_SEQ_LEN="64", EVAL_STRIDE="16", TRAIN_BATCH_TOKENS="1024",
                   VAL_BATCH_SIZE="8192", TTT_CHUNK_TOKENS="1024", TTT_EPOCHS="1")
SMOKE_SHORTENING = dict(ITERATIONS="8", MAX_WALLCLOCK_SECONDS="0", WARMDOWN_ITERS="52", WARMUP_STEPS="4",
                        VAL_LOSS_EVERY="4", TRAIN_LOG_EVERY="1", SWA_EVERY="2", TTT_BURST_STEPS="2")
SMOKE_RECUR_STEP = 4
SMOKE_VAL_TOKENS = (2048, 3072)  # 2 and 3 TTT chunks of 1024

EVALUATIONS = (("roundtrip", "final_int6_roundtrip"), ("sliding", "final_int6_sliding_window"), ("TTT", "final_ttt"))
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
KILL_GRACE_S = 15  # after SIGTERM (a run writes its ERROR line), before SIGKILL


class CheckError(Exception):
    """Bad input to the check itself: one line, exit 1."""


# ----------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Mode:
    smoke: bool
    budget: float  # default --budget, seconds
    stage_timeout: float  # default --stage-timeout
    val_tokens: tuple[int, int]

    @property
    def name(self) -> str:
        return "smoke" if self.smoke else "gpu"


GPU_MODE = Mode(smoke=False, budget=540.0, stage_timeout=420.0, val_tokens=GPU_VAL_TOKENS)
SMOKE_MODE = Mode(smoke=True, budget=900.0, stage_timeout=300.0, val_tokens=SMOKE_VAL_TOKENS)  # room for a busy CPU


@dataclass
class Config:
    name: str
    path: Path
    values: dict

    @property
    def own_recurrence(self) -> bool:
        """The file sets depth recurrence: repeats (RECUR_LAYERS, from RECUR_STEP) or a loop (LOOP_LAYERS, from a fraction)."""
        return bool(self.values.get("RECUR_LAYERS", "") or self.values.get("LOOP_LAYERS", ""))

    @property
    def vocab(self) -> int:
        return int(self.value("VOCAB_SIZE", hyperparameter_defaults()["VOCAB_SIZE"]))

    @property
    def forced_recurrence(self) -> bool:
        """Every configuration but the record's runs the repeats inside the check, where it sets none."""
        return self.path.resolve() != RECORD_CONFIG.resolve() and not self.own_recurrence

    def value(self, name: str, default: float) -> float:
        """A numeric setting of the file, the default where absent (or unreadable: the run itself says why)."""
        try:
            return float(self.values.get(name, default))
        except ValueError:
            return default

    @property
    def gptq_reserve(self) -> float:
        """The seconds that train calibration takes off the training loop (Hyperparameters.train_seconds)."""
        defaults = hyperparameter_defaults()
        method, source = (self.values.get(name, defaults[name]) for name in ("QUANT_METHOD", "GPTQ_CALIBRATION"))
        return self.value("GPTQ_RESERVE_SECONDS", defaults["GPTQ_RESERVE_SECONDS"]) if (method, source) == ("gptq", "train") else 0.0


def read_configs(paths: list[str] | None) -> list[Config]:
    """The configurations to check: those named, or record.env then every other file of configs/."""
    files = [Path(p) for p in paths] if paths else [RECORD_CONFIG] + sorted(set(CONFIGS.glob("*.env")) - {RECORD_CONFIG})
    configs = []
    for path in files:
        if not path.is_file():
            raise CheckError(f"--config {path}: no such file")
        try:
            configs.append(Config(path.stem, path, proxy.read_env_file(path)))
        except (proxy.ProxyError, UnicodeDecodeError) as e:
            raise CheckError(str(e)) from None
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise CheckError(f"two configurations share a name: {', '.join(names)} (a folder per name holds their runs)")
    return configs


def recurrence_step(step_ms: float | None) -> int:
    """A RECUR_STEP reached about 30 % into the GPU run's training loop (before late QAT, at 620 ms a step), given a
    step time without the repeats."""
    expected = 1000 * GPU_TRAIN_SECONDS / ((step_ms or REFERENCE_STEP_MS) * RECURRENCE_SLOWDOWN)
    return max(2, round(0.3 * expected))


def run_settings(config: Config, mode: Mode, data: dict, recur_step: int) -> dict:
    """The variables of the configuration's shortened run: the file, (smoke) the smoke sizes, the shortening,
    the repeats where the check switches them on, the data."""
    settings = dict(config.values)
    if mode.smoke:
        settings.update(proxy.read_env_file(SMOKE_ENV), **SMOKE_SIZES, **SMOKE_SHORTENING)
    else:
        settings.update(GPU_SHORTENING, MAX_WALLCLOCK_SECONDS=str(GPU_TRAIN_SECONDS + config.gptq_reserve))
    if config.forced_recurrence:
        # the repeats' MLPs add about 1.6 MB that the configuration itself does not carry; its own size is
        # checked at the start of its real run (and by tests/test_configs.py)
        settings.update(RECUR_LAYERS=FORCED_RECURRENCE, ALLOW_OVER_LIMIT="1")
    if settings.get("RECUR_LAYERS"):  # the repeats switch on at a step; a loop at its fraction of the short run
        settings["RECUR_STEP"] = str(SMOKE_RECUR_STEP if mode.smoke else recur_step)
    settings.update(data, VAL_TOKENS=str(mode.val_tokens[0]), RUN_ID="run")
    return settings


def choose_data(mode: Mode, vocab: int = 1024) -> tuple[dict, list[str] | None]:
    """DATA_PATH and TOKENIZER_PATH (absolute) for a vocabulary, and the builder's command to run first where the
    data is missing: FineWeb of that vocabulary where downloaded, else the proxy corpus (the sample with --smoke)."""
    given = {k: os.environ.get(k, "") for k in ("DATA_PATH", "TOKENIZER_PATH")}
    if any(given.values()):
        if not all(given.values()):
            raise CheckError("set both DATA_PATH and TOKENIZER_PATH, or neither")
        if tokenizer_pieces(given["TOKENIZER_PATH"]) == vocab:  # the given data serves its own vocabulary's configurations
            return {k: str(Path(v).resolve()) for k, v in given.items()}, None
    suffix = "" if vocab == 1024 else f"_sp{vocab}"
    fineweb = (REPO / "data" / "datasets" / f"fineweb10B_sp{vocab}", REPO / "data" / "tokenizers" / f"fineweb_{vocab}_bpe.model")
    if not mode.smoke and all(p.exists() for p in fineweb):
        return dict(DATA_PATH=str(fineweb[0]), TOKENIZER_PATH=str(fineweb[1])), None
    kind, builder = ("sample", "make_sample.py") if mode.smoke else ("proxy", "make_proxy.py")
    folder = REPO / "data" / f"{kind}{suffix}"
    tokenizer = folder / f"{kind}_{vocab}_bpe.model"
    command = [sys.executable, str(REPO / "data" / builder), "--vocab", str(vocab)]
    return dict(DATA_PATH=str(folder), TOKENIZER_PATH=str(tokenizer)), None if tokenizer.is_file() else command


@functools.cache
def tokenizer_pieces(path: str) -> int:
    """The number of pieces of a SentencePiece model, or one line saying why it cannot be read."""
    import sentencepiece as spm
    if not Path(path).is_file():
        raise CheckError(f"TOKENIZER_PATH {path} is not a file")
    try:
        return spm.SentencePieceProcessor(model_file=path).vocab_size()
    except Exception as e:  # sentencepiece's own message, in one line
        raise CheckError(f"TOKENIZER_PATH {path} is not a SentencePiece model: {str(e).splitlines()[0]}") from None


@functools.cache
def hyperparameter_defaults() -> dict:
    """Every hyperparameter's variable and default (train_gpt imported when first needed: --help stays quick)."""
    import train_gpt as tg
    return {name.upper(): value for name, value in tg.Hyperparameters.defaults().items()}


def child_env(settings: dict, cpu: bool) -> dict:
    """os.environ without any hyperparameter or torchrun variable, then settings; with cpu, no GPU visible."""
    drop = set(hyperparameter_defaults()) | set(TORCHRUN_VARS)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(settings, PYTHONUNBUFFERED="1", **({"CUDA_VISIBLE_DEVICES": ""} if cpu else {}))
    return env


def ignored_environment() -> list[str]:
    """The environment's hyperparameter variables that the runs do not see (all but the data's)."""
    return sorted((set(hyperparameter_defaults()) - {"DATA_PATH", "TOKENIZER_PATH"}) & set(os.environ))


# ----------------------------------------------------------------------------- stages

@dataclass
class Stage:
    name: str
    status: str = "skipped"  # ok | FAILED | stopped (the budget ran out) | skipped
    detail: str = ""
    seconds: float = 0.0
    lines: list = field(default_factory=list)  # (seconds since the stage started, text)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def line_time(self, prefix: str) -> float | None:
        return next((t for t, text in self.lines if text.startswith(prefix)), None)

    def fail(self, detail: str) -> Stage:
        self.status, self.detail = "FAILED", detail
        return self


class Budget:
    """The sequence's wall time: what is left, and whether a stage of a kind fits (by its kind's longest so far)."""

    def __init__(self, seconds: float, floors: dict, clock=time.monotonic):
        self.seconds, self.floors, self.clock, self.start = seconds, dict(floors), clock, clock()
        self.taken: dict[str, float] = {}

    def left(self) -> float:
        return self.seconds - (self.clock() - self.start)

    def need(self, kind: str) -> float:
        return max(self.floors.get(kind, 0.0), self.taken.get(kind, 0.0))

    def record(self, kind: str, seconds: float):
        self.taken[kind] = max(self.taken.get(kind, 0.0), seconds)


def stop_group(proc: subprocess.Popen):
    """SIGTERM to the stage's process group (a run then writes its ERROR line); once its own process has gone, or
    after a grace period, SIGKILL to whatever of the group is left (compile workers, children)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=KILL_GRACE_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def tolerate_preflight(stage: Stage, returncode: int | None, tolerated: list[str]):
    """Passes a preflight whose only failed checks (its summary line `preflight: FAILED: A, B`) are tolerated."""
    summary = next((text for _, text in reversed(stage.lines) if text.startswith("preflight: ")), "")
    failed = set(summary.removeprefix("preflight: FAILED: ").split(", ")) if summary.startswith("preflight: FAILED: ") else set()
    if returncode == 1 and failed and failed <= set(tolerated):
        stage.status, stage.detail = "ok", f"failed checks tolerated (--tolerate): {', '.join(sorted(failed))}"


def failure_reason(stage: Stage, returncode: int) -> str:
    """A run's own one line (`error: ...`), the preflight's summary of its failed checks, else the exit status and
    the last line printed (a builder's error, a traceback's exception)."""
    for prefix in ("error: ", "preflight: FAILED"):
        found = [text for _, text in stage.lines if text.startswith(prefix)]
        if found:
            return found[-1]
    last = next((text.strip() for _, text in reversed(stage.lines) if text.strip()), "")
    return f"exit {returncode}" + (f": {last}" if last else "")


def run_stage(stage: Stage, command: list[str], env: dict, cwd: Path, output: Path, timeout: float,
              on_timeout: tuple[str, str], echo=print) -> int | None:
    """Runs command, each line echoed and kept with its time and written to output; at timeout stops it (its
    whole process group) and gives the stage on_timeout's status and reason. Returns the exit status (None if stopped)."""
    cwd.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(output, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)

        def pump():
            for text in proc.stdout:
                text = text.rstrip("\n")
                stage.lines.append((time.monotonic() - start, text))
                out.write(text + "\n")
                echo(f"[{stage.name}] {text}")

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            returncode = proc.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            stop_group(proc)
            returncode = None
        except BaseException:  # Ctrl-C: the stage's processes are in their own session and must go too
            stop_group(proc)
            raise
        finally:
            reader.join(timeout=5)
    stage.seconds = time.monotonic() - start
    if returncode is None:
        status, why = on_timeout
        stage.status, stage.detail = status, f"stopped after {stage.seconds:.0f} s: {why}"
    elif returncode != 0:
        stage.fail(failure_reason(stage, returncode))
    else:
        stage.status = "ok"
    return returncode


# ----------------------------------------------------------------------------- reading the runs

def first(lines: list[str], pattern: str) -> re.Match | None:
    return next((m for m in map(re.compile(pattern).match, lines) if m), None)


def run_lines(log_path: Path) -> list[str]:
    """A run log's lines after its source and versions."""
    lines = log_path.read_text(encoding="utf-8").splitlines()
    rules = [i for i, line in enumerate(lines) if line == summarize_logs.SEPARATOR]
    return lines[rules[-1] + 1:] if rules else []


def eval_times(lines: list[str]) -> dict[str, float]:
    """Seconds of each final evaluation, by its short name."""
    times = {}
    for short, name in EVALUATIONS:
        m = first(lines, rf"{name} val_loss:\S+ val_bpb:\S+ eval_time:(\d+)ms")
        if m:
            times[short] = int(m[1]) / 1000
    return times


def roundtrip_line(lines: list[str]) -> str | None:
    """The line whose figures the artifact read back must reproduce exactly."""
    m = first(lines, r"final_int6_roundtrip_exact .*")
    return m[0] if m else None


def val_targets(lines: list[str]) -> int | None:
    m = first(lines, r"val_tokens:(\d+) ")
    return int(m[1]) if m else None


def missing_phases(log: dict, lines: list[str]) -> list[str]:
    """The phases of a real run that the log does not show (those its hyperparameters switch on)."""
    hp = log["hyperparameters"]
    expected = {"warm-up priming": "warmup_prime ", "weight average": "weight_avg:", "post-average evaluation": "DIAGNOSTIC ",
                "quantisation": "quantize:", "artifact read back": "Serialized model int6+",
                "roundtrip": "final_int6_roundtrip_exact ", "sliding window": "final_int6_sliding_window_exact "}
    if hp.get("late_qat_threshold"):
        expected["late QAT"] = "late_qat:enabled "
        if hp.get("soft_round_threshold"):
            expected["soft-round"] = "soft_round:enabled "
    if hp.get("swa_enabled"):
        expected["SWA"] = "swa:start "
    if hp.get("ttt_burst_enabled"):
        expected["late burst"] = "ttt_burst:done"
    if hp.get("recur_layers") or hp.get("loop_layers"):
        expected["recurrence mid-run"] = "recurrence:enabled step:"
    if hp.get("quant_method") == "gptq":
        expected["GPTQ calibration"] = "gptq:calibration "
    if hp.get("ttt_enabled"):
        expected["TTT"] = "final_ttt_exact "
    return [name for name, prefix in expected.items() if not any(line.startswith(prefix) for line in lines)]


def step_points(log: dict) -> list[tuple[int, float]]:
    """(step, training ms) of every step line after step 0, and of a validation line where its step has none (the last
    step, between logged ones: a validation's time is a few ms later than its step's, past the step line's logging)."""
    points = {step: ms for step, _, _, ms in log["val_curve"]}
    points.update({step: ms for step, _, ms in log["train_curve"]})
    return sorted((s, ms) for s, ms in points.items() if s >= 1)


def rate(points: list[tuple[int, float]]) -> float | None:
    """ms per step between the first and last point (the first point's own step excluded)."""
    if len(points) < 2 or points[-1][0] == points[0][0]:
        return None
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


def steps_in(train_ms: float, before_ms: float, after_ms: float | None = None, switch: int | None = None) -> float:
    """Steps of a training loop of train_ms on 8 GPUs (one micro-batch each): before_ms per step of 8 micro-batches
    on one GPU, after_ms from step `switch` on."""
    per_gpu = before_ms / GPUS
    if after_ms is None or switch is None or switch * per_gpu >= train_ms:
        return train_ms / per_gpu
    return switch + (train_ms - switch * per_gpu) / (after_ms / GPUS)


@dataclass
class Projection:
    first_call: float  # seconds of a first call beyond its targets' share: compilation, allocation
    per_target: float  # seconds per target on one GPU

    @property
    def full(self) -> float:
        """The full validation set on 8 GPUs, each scoring an eighth (scaling perfectly)."""
        return self.first_call + self.per_target * FULL_VAL_TARGETS / GPUS


def project(n1: int, t1: float, n2: int, t2: float) -> Projection | None:
    """Time = first call + per target x targets, through two eval-only timings; None where it does not resolve."""
    if n2 <= n1 or t2 <= t1:
        return None
    per_target = (t2 - t1) / (n2 - n1)
    return Projection(max(t1 - per_target * n1, 0.0), per_target)


@dataclass
class Outcome:
    """One configuration's stages and what their logs say."""
    config: Config
    settings: dict
    run: Stage
    reread: Stage
    evaltime: Stage
    figures: dict = field(default_factory=dict)


def read_run(outcome: Outcome, log_path: Path):
    """The run's figures into outcome.figures (as far as it went); fails a run that exited 0 where a phase of a real
    run is missing from its log."""
    log = summarize_logs.parse_log(log_path)
    lines = run_lines(log_path)
    missing = missing_phases(log, lines)
    if missing and outcome.run.ok:
        outcome.run.fail(f"the run did not go through: {', '.join(missing)}")
    points = step_points(log)
    switch = first(lines, r"recurrence:enabled step:(\d+) ")
    switch = int(switch[1]) if switch else None
    before = [p for p in points if switch is None or p[0] <= switch]
    after = [p for p in points if switch is not None and p[0] > switch]
    prime = first(lines, r"warmup_prime steps:(\d+) time:(\d+)ms")
    memory = first(lines, r"peak memory allocated: (\d+) MiB reserved: (\d+) MiB")
    quant = first(lines, r"quantize:(\w+) time:(\d+)ms")
    calibration = first(lines, r"gptq:calibration source:(\w+) sequences:(\d+) (?:per rank )?time:(\d+)ms")
    device = first(lines, r"val_tokens:\d+ device:(\S+) attention:(\S+)")
    artifact_start, artifact_end = outcome.run.line_time("DIAGNOSTIC "), outcome.run.line_time("quantize:")
    post = first(lines, r"DIAGNOSTIC post_\w+ val_loss:\S+ val_bpb:\S+ eval_time:(\d+)ms")
    outcome.figures.update(
        log=log, lines=lines, switch=switch, before_ms=rate(before), after_ms=rate(after),
        prime=(int(prime[1]), int(prime[2]) / 1000) if prime else None,
        memory=(int(memory[1]), int(memory[2])) if memory else None,
        quant=(quant[1], int(quant[2]) / 1000) if quant else None,
        calibration=(calibration[1], int(calibration[2]), int(calibration[3]) / 1000) if calibration else None,
        device=device[1] if device else None, attention=device[2] if device else None,
        artifact_s=artifact_end - artifact_start if artifact_start is not None and artifact_end is not None else None,
        roundtrip_line=roundtrip_line(lines), run_evals=eval_times(lines), run_targets=val_targets(lines),
        post_eval_s=int(post[1]) / 1000 if post else None)


def compare_reread(outcome: Outcome, log_path: Path):
    """Fails the reread unless its roundtrip line is the run's, character for character."""
    lines = run_lines(log_path)
    found = roundtrip_line(lines)
    outcome.figures.update(reread_evals=eval_times(lines), reread_targets=val_targets(lines))
    if found != outcome.figures.get("roundtrip_line"):
        outcome.reread.fail(f"the artifact read back scores otherwise: run '{outcome.figures.get('roundtrip_line')}', "
                            f"reread '{found}'")


def read_evaltime(outcome: Outcome, log_path: Path):
    """The evaluations' times on more targets; fails the stage unless it ran the run's evaluations."""
    lines = run_lines(log_path)
    times, targets = eval_times(lines), val_targets(lines)
    expected = [short for short, _ in EVALUATIONS if short in outcome.figures.get("run_evals", {})]
    if sorted(times) != sorted(expected):
        outcome.evaltime.fail(f"it timed {', '.join(times) or 'no evaluation'}, the run {', '.join(expected)}")
    outcome.figures.update(evaltime_evals=times, evaltime_targets=targets)


# ----------------------------------------------------------------------------- the sequence

class Check:
    def __init__(self, opts, mode: Mode, echo=print):
        self.opts, self.mode, self.echo = opts, mode, echo
        self.out = Path(opts.out).resolve() if opts.out else OUT
        floors = (dict(run=5, reread=2, evaltime=2) if mode.smoke else
                  dict(run=GPU_TRAIN_SECONDS + 60, reread=20, evaltime=25))
        self.budget = Budget(opts.budget if opts.budget is not None else mode.budget, floors)
        self.stage_timeout = opts.stage_timeout if opts.stage_timeout is not None else mode.stage_timeout
        self.stages: list[Stage] = []

    def env(self, settings: dict) -> dict:
        return child_env(settings, cpu=self.mode.smoke)

    def admit(self, stage: Stage, kind: str) -> bool:
        """Records the stage; False (it stays skipped, saying why) when what is left of the budget cannot fit it."""
        self.stages.append(stage)
        need, left = self.budget.need(kind), self.budget.left()
        if left < need:
            stage.detail = f"{max(left, 0):.0f} s of the {self.budget.seconds:.0f} s budget left, about {need:.0f} s needed"
        return left >= need

    def execute(self, stage: Stage, kind: str, command: list[str], env: dict, cwd: Path, output: Path) -> int | None:
        left = self.budget.left()
        timeout, on_timeout = ((self.stage_timeout, ("FAILED", f"--stage-timeout {self.stage_timeout:.0f} s"))
                               if self.stage_timeout <= left else (left, ("stopped", f"the {self.budget.seconds:.0f} s budget ran out")))
        self.echo(f"gpu_check: {stage.name} ...")
        returncode = run_stage(stage, command, env, cwd, output, timeout, on_timeout, self.echo)
        self.budget.record(kind, stage.seconds)
        self.echo(f"gpu_check: {stage.name} {stage.status} in {stage.seconds:.1f} s{': ' + stage.detail if stage.detail else ''}")
        return returncode

    def build_data(self, command: list[str], vocab: int):
        stage = Stage("data" if vocab == 1024 else f"data:sp{vocab}")
        if self.admit(stage, "data"):
            self.execute(stage, "data", command, self.env({}), REPO, self.out / f"{stage.name.replace(':', '_')}.out")
        return stage

    def preflight(self, config: Config, data: dict):
        stage = Stage("preflight")
        if not self.admit(stage, "preflight"):
            return
        settings = dict(config.values)
        if self.mode.smoke:
            settings.update(proxy.read_env_file(SMOKE_ENV), **SMOKE_SIZES)
        settings.update(data)
        steps = ["--steps", "1", "--ttt-chunks", "1"] if self.mode.smoke else ["--steps", "3", "--ttt-chunks", "2"]
        returncode = self.execute(stage, "preflight", [sys.executable, str(REPO / "scripts" / "preflight.py"), *steps],
                                  self.env(settings), self.out, self.out / "preflight.out")
        tolerate_preflight(stage, returncode, self.opts.tolerate)

    def run(self, config: Config, data: dict, recur_step: int) -> Outcome:
        folder = self.out / config.name
        settings = run_settings(config, self.mode, data, recur_step)
        outcome = Outcome(config, settings, Stage(f"run:{config.name}"), Stage(f"reread:{config.name}"),
                          Stage(f"evaltime:{config.name}"))
        stage = outcome.run
        if not self.admit(stage, "run"):
            return outcome
        for name in ("final_model.int6.ptz", "final_model.pt"):  # no artifact of an earlier check stands in
            (folder / name).unlink(missing_ok=True)
        self.execute(stage, "run", [sys.executable, str(REPO / "train_gpt.py")], self.env(settings), folder,
                     folder / "run.out")
        log_path = folder / "logs" / "run.txt"
        if stage.ok or log_path.is_file():  # a failed run's figures too, as far as it went
            try:
                read_run(outcome, log_path)
            except (OSError, summarize_logs.LogError) as e:
                if stage.ok:
                    stage.fail(f"its log cannot be read: {e}")
        return outcome

    def eval_only(self, outcome: Outcome, kind: str, val_tokens: int) -> Stage:
        """EVAL_ARTIFACT on the run's artifact with the run's settings and val_tokens targets."""
        stage = getattr(outcome, kind)
        if not outcome.run.ok:
            self.stages.append(stage)
            stage.detail = f"{outcome.run.name} did not pass"
            return stage
        if not self.admit(stage, kind):
            return stage
        folder = self.out / outcome.config.name
        settings = dict(outcome.settings, EVAL_ARTIFACT=str(folder / "final_model.int6.ptz"), RUN_ID=kind,
                        VAL_TOKENS=str(val_tokens))
        self.execute(stage, kind, [sys.executable, str(REPO / "train_gpt.py")], self.env(settings), folder,
                     folder / f"{kind}.out")
        log_path = folder / "logs" / f"{kind}.txt"
        if stage.ok:
            (compare_reread if kind == "reread" else read_evaltime)(outcome, log_path)
        return stage

    def sequence(self, configs: list[Config]) -> list[Outcome]:
        data = {}  # per vocabulary
        for vocab in dict.fromkeys(config.vocab for config in configs):
            data[vocab], builder = choose_data(self.mode, vocab)
            if builder is not None and not self.build_data(builder, vocab).ok:
                return []
        self.data = data[configs[0].vocab]
        ignored = ignored_environment()
        if ignored:
            self.echo(f"gpu_check: not used from the environment (the configuration files define the runs): {', '.join(ignored)}")
        if not self.opts.skip_preflight:
            self.preflight(configs[0], data[configs[0].vocab])
        outcomes, step_ms = [], None
        for config in configs:
            outcome = self.run(config, data[config.vocab], recurrence_step(step_ms))
            if config.path.resolve() == RECORD_CONFIG.resolve():
                step_ms = outcome.figures.get("before_ms") or step_ms
            self.eval_only(outcome, "reread", self.mode.val_tokens[0])
            outcomes.append(outcome)
        for outcome in outcomes:
            self.eval_only(outcome, "evaltime", self.mode.val_tokens[1])
        return outcomes


# ----------------------------------------------------------------------------- the table

def fmt(value, spec: str = ",.0f", unit: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{unit}"


def projections(outcome: Outcome) -> dict[str, Projection | None]:
    """Each evaluation the run made, as a first call and a time per target (None where not measured). The roundtrip
    from the run itself: there it follows the post-average evaluation, which compiled the same graph, so all its
    time is its targets', and the first call is the post-average evaluation's excess. Sliding and TTT compile in
    their first call in any process: from the two eval-only stages, through their difference in targets."""
    f = outcome.figures
    out = {short: None for short in f.get("run_evals", {})}
    post, roundtrip = f.get("post_eval_s"), f.get("run_evals", {}).get("roundtrip")
    if post is not None and roundtrip:
        out["roundtrip"] = Projection(max(post - roundtrip, 0.0), roundtrip / f["run_targets"])
    if outcome.reread.ok and outcome.evaltime.ok:
        for short in set(out) - {"roundtrip"}:
            out[short] = project(f["reread_targets"], f["reread_evals"][short], f["evaltime_targets"], f["evaltime_evals"][short])
    return out


def config_figures(outcome: Outcome) -> dict:
    """The table's figures of one configuration (None where a stage did not give them)."""
    f, config = outcome.figures, outcome.config
    real_train_ms = 1000 * (config.value("MAX_WALLCLOCK_SECONDS", hyperparameter_defaults()["MAX_WALLCLOCK_SECONDS"])
                            - config.gptq_reserve)
    before, after = f.get("before_ms"), f.get("after_ms")
    own_switch = None
    if config.values.get("RECUR_LAYERS"):
        own_switch = int(config.value("RECUR_STEP", hyperparameter_defaults()["RECUR_STEP"]))
    elif config.values.get("LOOP_LAYERS") and before:  # the loop: at its fraction of the real run's clock
        own_switch = round(config.value("LOOP_START_FRAC", hyperparameter_defaults()["LOOP_START_FRAC"]) * real_train_ms / (before / GPUS))
    steps = steps_in(real_train_ms, before, after if own_switch else None, own_switch) if before else None
    evals = projections(outcome)
    total = sum(p.full for p in evals.values()) if evals and all(evals.values()) else None
    return dict(before=before, after=after, steps=steps, evals=evals, total=total,
                gpu_ms=before / GPUS if before else None)


def summary(check: Check, outcomes: list[Outcome]) -> tuple[str, bool]:
    """The table and verdict, and whether everything passed."""
    figures = {o.config.name: config_figures(o) for o in outcomes}
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell):
        rows.append((label, [cell(o, figures[o.config.name]) for o in outcomes]))

    def stages_cell(o, _):
        return ", ".join(f"{s.name.split(':')[0]} {s.status}" + (f" {s.seconds:.0f} s" if s.status != "skipped" else "")
                         for s in (o.run, o.reread, o.evaltime))

    def prime_cell(o, g):
        prime = o.figures.get("prime")
        if not prime:
            return "—"
        compile_s = max(prime[1] - prime[0] * g["before"] / 1000, 0.0) if g["before"] else None
        return f"{prime[1]:.1f} s: {prime[0]} steps, compilation ≈ {fmt(compile_s, '.1f', ' s')}"

    def repeats_cell(o, g):
        if g["after"] is None:
            return "—"
        kind = "forced" if o.config.forced_recurrence else "its own"
        name = "RECUR_LAYERS" if o.settings.get("RECUR_LAYERS") else "LOOP_LAYERS"
        return (f"{g['after']:,.1f} ({(g['after'] / g['before'] - 1) * 100:+.1f} %), {name}="
                f"{o.settings.get(name)} ({kind}) from step {o.figures['switch'] + 1}")

    def calibration_cell(o, _):
        cal = o.figures.get("calibration")
        if not cal:
            return "—"
        source, sequences, seconds = cal
        per_rank = -(-int(o.config.value("GPTQ_SEQUENCES", hyperparameter_defaults()["GPTQ_SEQUENCES"])) // GPUS)
        projected = seconds / max(sequences, 1) * per_rank
        return (f"{seconds:.1f} s for {sequences} sequences ({source}); {per_rank} per rank on {GPUS} GPUs ≈ "
                f"{projected:.1f} s" + (f" of the {o.config.gptq_reserve:.0f} s reserve" if o.config.gptq_reserve else ""))

    def eval_cell(short):
        def cell(o, g):
            if short not in g["evals"]:
                return "—"
            p = g["evals"][short]
            if p is None:
                return "not measured" if not o.evaltime.ok else "not resolved: more targets took no longer"
            return f"{p.full:,.1f} s (first call {p.first_call:.1f} s + {p.per_target * 1e6:.3f} µs/target)"
        return cell

    def bpb_cell(o, _):
        log = o.figures.get("log")
        if not log:
            return "—"
        curve = log["val_curve"]
        parts = [f"step 0 {curve[0][2]:.4f}" if curve else None, f"step {curve[-1][0]} {curve[-1][2]:.4f}" if curve else None,
                 f"post-{log['post_kind']} {log['post_val_bpb']:.4f}" if log["post_val_bpb"] is not None else None]
        return " → ".join(p for p in parts if p)

    def finals_cell(o, _):
        log = o.figures.get("log")
        return "—" if not log else " / ".join(fmt(log[f"{k}_val_bpb"], ".5f") for k in ("roundtrip", "sliding", "ttt"))

    row("stages", stages_cell)
    row("warm-up priming (compiles every graph)", prime_cell)
    row("ms per step, 1 GPU, 8 micro-batches", lambda o, g: fmt(g["before"], ",.1f"))
    row("ms per step with the repeats on", repeats_cell)
    row(f"ms per step on {GPUS} GPUs (÷ {GPUS})", lambda o, g: fmt(g["gpu_ms"], ",.1f"))
    row(f"steps in the real run's training time on {GPUS} GPUs (record {RECORD_STEPS:,})", lambda o, g: fmt(g["steps"]))
    row("peak memory, MiB allocated / reserved",
        lambda o, g: "—" if not o.figures.get("memory") else "{:,} / {:,}".format(*o.figures["memory"]))
    row("GPTQ calibration", calibration_cell)
    row("quantisation", lambda o, g: "—" if not o.figures.get("quant") else "{} {:.1f} s".format(*o.figures["quant"]))
    row("quantise + compress + write", lambda o, g: fmt(o.figures.get("artifact_s"), ".1f", " s"))
    row("artifact bytes (a short run's, not a real run's size)", lambda o, g: fmt(o.figures["log"]["model_bytes"])
        if o.figures.get("log") else "—")
    row("validation targets: run and reread / evaltime", lambda o, g: f"{fmt(o.figures.get('reread_targets'))} / "
        f"{fmt(o.figures.get('evaltime_targets'))}")
    for short, _ in EVALUATIONS:
        row(f"{short}: all {FULL_VAL_TARGETS:,} targets on {GPUS} GPUs", eval_cell(short))
    row(f"evaluations together (budget {EVAL_BUDGET_S:.0f} s)", lambda o, g: fmt(g["total"], ",.1f", " s"))
    row("val_bpb while training", bpb_cell)
    row("val_bpb roundtrip / sliding / TTT", finals_cell)
    row("reread (EVAL_ARTIFACT): roundtrip", lambda o, g: "the run's line" if o.reread.ok else o.reread.status)

    verdict, passed = judge(check, outcomes, figures)
    return render(check, outcomes, rows) + "\n\n" + verdict, passed


def judge(check: Check, outcomes: list[Outcome], figures: dict) -> tuple[str, bool]:
    """The verdict line: failed and skipped stages, then (on a GPU) the budgets by projection."""
    failed = [f"{s.name} ({s.detail})" for s in check.stages if s.status == "FAILED"]
    stopped = [f"{s.name} ({s.detail})" for s in check.stages if s.status == "stopped"]
    skipped = [f"{s.name} ({s.detail})" for s in check.stages if s.status == "skipped"]
    judged = not check.mode.smoke
    over, unresolved, notes = [], [], []
    for o in outcomes:
        g = figures[o.config.name]
        if g["total"] is not None and g["total"] > EVAL_BUDGET_S:
            over.append(f"{o.config.name}: evaluations {g['total']:,.0f} s > {EVAL_BUDGET_S:.0f} s")
        if g["total"] is None and o.evaltime.ok:
            unresolved.append(o.config.name)
        if g["steps"] is not None and g["steps"] < RECORD_STEPS:
            notes.append(f"{o.config.name}: {g['steps']:,.0f} steps in its training time, fewer than the record's {RECORD_STEPS:,}")
    problems = [f"FAILED: {'; '.join(failed)}" if failed else "", f"stopped: {'; '.join(stopped)}" if stopped else "",
                f"skipped: {'; '.join(skipped)}" if skipped else "",
                f"over budget by projection: {'; '.join(over)}" if over and judged else "",
                f"evaluation budget not projected: {', '.join(unresolved)}" if unresolved and judged else ""]
    problems = [p for p in problems if p]
    passed = not problems
    head = ("PASSED: every stage ran and passed" if passed else "NOT PASSED: " + " | ".join(problems))
    if not judged:
        head += "; --smoke: the projections are of CPU timings and are not judged"
    elif passed:
        head += f"; by projection every configuration's evaluations fit {EVAL_BUDGET_S:.0f} s on {GPUS} GPUs"
    if notes and judged:
        head += "; note: " + "; ".join(notes)
    return "verdict: " + head, passed


def render(check: Check, outcomes: list[Outcome], rows: list[tuple[str, list[str]]]) -> str:
    f = next((o.figures for o in outcomes if o.figures.get("device")), {})
    gpu = next((text.split(": ", 1)[1] for s in check.stages if s.name == "preflight" for _, text in s.lines
                if text.startswith("ok       gpu: ")), None)
    header = [f"gpu_check ({check.mode.name}): device {gpu or f.get('device') or '—'}, attention {f.get('attention') or '—'}, "
              f"data {check.data['DATA_PATH']}",
              ("training loop " + (f"{GPU_TRAIN_SECONDS:.0f} s per run (plus a GPTQ reserve), " if not check.mode.smoke
                                   else f"{SMOKE_SHORTENING['ITERATIONS']} steps per run, ")
               + f"budget {check.budget.seconds:.0f} s, {check.budget.seconds - check.budget.left():.0f} s used; "
               f"figures on {GPUS} GPUs assume they split the 8 micro-batches and the evaluations evenly, "
               "communication overlapped"),
              "preflight: " + next((f"{s.status}{': ' + s.detail if s.detail else ''}" for s in check.stages
                                    if s.name == "preflight"), "not run (--skip-preflight)"), ""]
    width = max(len(label) for label, _ in rows)
    widths = [max(len(o.config.name), *(len(cells[i]) for _, cells in rows)) for i, o in enumerate(outcomes)]
    table = [f"| {'':{width}} | " + " | ".join(f"{o.config.name:{w}}" for o, w in zip(outcomes, widths)) + " |",
             f"|{'-' * (width + 2)}|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    table += [f"| {label:{width}} | " + " | ".join(f"{c:{w}}" for c, w in zip(cells, widths)) + " |" for label, cells in rows]
    return "\n".join(header + table)


# ----------------------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="the same sequence at toy size on the CPU (the bundled sample)")
    p.add_argument("--config", action="append", metavar="FILE",
                   help="a configuration file (repeatable; default configs/record.env, then every other configs/*.env)")
    p.add_argument("--out", help=f"folder of the summary and every stage's output (default logs/gpu_check)")
    p.add_argument("--budget", type=float, help="seconds for the whole sequence (default 540 on a GPU, 900 with --smoke): "
                                                "a stage that would not fit is skipped, one that runs past it is stopped")
    p.add_argument("--stage-timeout", type=float, help="seconds after which one stage is stopped and failed "
                                                       "(default 420 on a GPU, 300 with --smoke)")
    p.add_argument("--skip-preflight", action="store_true", help="leave the preflight out (a second check on the same machine)")
    p.add_argument("--tolerate", action="append", default=[], metavar="CHECK",
                   help="a preflight check whose FAIL does not fail the stage, e.g. flash_attn_3 on a GPU without it")
    return p.parse_args(argv)


def main(argv=None) -> int:
    opts = parse_args(argv)
    mode = SMOKE_MODE if opts.smoke else GPU_MODE
    try:
        configs = read_configs(opts.config)
        if not mode.smoke:
            import torch
            if not torch.cuda.is_available():
                raise CheckError("no CUDA device: this check runs on one GPU (--smoke runs the same sequence on the CPU)")
        check = Check(opts, mode)
        check.out.mkdir(parents=True, exist_ok=True)
        outcomes = check.sequence(configs)
        if outcomes:
            text, passed = summary(check, outcomes)
        else:  # the data could not be built
            text, passed = "verdict: NOT PASSED: FAILED: " + "; ".join(f"{s.name} ({s.detail})" for s in check.stages), False
        summarize_logs.write_atomic(check.out / "summary.md", lambda f: f.write(text + "\n"))
    except CheckError as e:
        print(f"gpu_check: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the output folder: not writable, full
        print(f"gpu_check: error: cannot write {e.filename or 'the output'}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gpu_check: stopped by Ctrl-C", file=sys.stderr)
        return 130
    print(text)
    print(f"gpu_check: the summary and every stage's output are in {check.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
