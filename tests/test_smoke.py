"""End-to-end runs on CPU: torchrun with 2 gloo processes against one process on the same tiny
configuration (recipe §2: same data order, same result up to float noise), and scripts/smoke.sh in a
copy of the repository.

Tolerances of the 2-process vs 1-process comparison, measured on this configuration (seeds 1337, 42
and 7; 12, 20 and 30 iterations): the DIAGNOSTIC val_bpb (4 decimals) was identical every time, and
the 8-decimal `*_exact` val_bpb of the final evaluations differed by at most 6e-7. Both runs consume
the same 8 x (64 + 1) tokens per step; only the order of the gradient sums differs (8 accumulated
micro-batches vs 4 per rank plus an all-reduce mean), and the rank-split evaluations sum the same
float64 NLL and byte counts in another order. So:
  - DIAGNOSTIC: |diff| <= 1.5e-4 -- one unit of the printed 4th decimal (a true difference of ~1e-6
    can straddle a rounding boundary) plus slack;
  - `*_exact` lines: |diff| <= 2e-5 -- about 30x the largest difference measured.
A broken data split is far outside these: with both ranks reading the same slice, the 2-process
DIAGNOSTIC val_bpb was 4.1012 against 3.9966 for one process (measured on a mutated copy).
"""
import re
import shutil
import sys
from pathlib import Path

import pytest

from conftest import REPO, check_golden, clean_environ, golden_differences, run_lines, run_script, tiny_run_env, torchrun_cmd

DIAG_TOL = 1.5e-4
EXACT_TOL = 2e-5
DDP_ITERATIONS = 12  # TINY_CONFIG's; WARMDOWN_ITERS=6 so the run also goes through late QAT, SWA and the burst

DIAG_RE = re.compile(r"^DIAGNOSTIC post_(ema|swa) val_loss:([\d.]+) val_bpb:([\d.]+)", re.M)
EXACT_RE = re.compile(r"^(\w+)_exact val_loss:([\d.]+) val_bpb:([\d.]+)$", re.M)


def run_part(cwd: Path, run_id: str) -> str:
    """The log of run_id in cwd after the embedded source and versions (recipe §8: the source comes first)."""
    return "\n".join(run_lines(cwd / "logs" / f"{run_id}.txt"))


def diagnostic_bpb(log: str) -> float:
    found = DIAG_RE.findall(log)
    assert len(found) == 1, found
    return float(found[0][2])


@pytest.fixture(scope="module")
def ddp_and_single(tiny_data, tmp_path_factory):
    """The tiny configuration run once under torchrun (2 gloo processes) and once as one process."""
    site = tmp_path_factory.mktemp("site")  # each process that exits through the interpreter's teardown leaves a file
    (site / "sitecustomize.py").write_text("import atexit, os\n"
                                           "atexit.register(lambda: open(f\"torn_down_{os.environ.get('RANK', '-')}\", 'w').close())\n")
    base = tiny_run_env(tiny_data, OMP_NUM_THREADS="1", ITERATIONS=str(DDP_ITERATIONS), PYTHONPATH=str(site))
    runs = {}
    for run_id, cmd in (("ddp", torchrun_cmd() + ["--standalone", "--nproc_per_node=2"]), ("single", [sys.executable])):
        cwd = tmp_path_factory.mktemp(run_id)
        result = run_script(cmd + [str(REPO / "train_gpt.py")], dict(base, RUN_ID=run_id), cwd=cwd, timeout=480)
        assert result.returncode == 0, f"{run_id} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        result.cwd = cwd  # where its log and artifact are
        runs[run_id] = (result, run_part(cwd, run_id))
    return runs


def test_torchrun_two_processes_completes(ddp_and_single):
    result, log = ddp_and_single["ddp"]
    assert "Traceback" not in result.stderr
    assert re.findall(r"^world_size:\d+ grad_accum_steps:\d+$", log, re.M) == ["world_size:2 grad_accum_steps:4"]
    steps = [int(s) for s in re.findall(rf"^step:(\d+)/{DDP_ITERATIONS} train_loss:[\d.]+ train_time:\d+ms", log, re.M)]
    assert steps == list(range(1, DDP_ITERATIONS + 1))  # TRAIN_LOG_EVERY=1, and rank 0 alone writes the log
    assert re.search(rf"^step:{DDP_ITERATIONS}/{DDP_ITERATIONS} val_loss:[\d.]+ val_bpb:[\d.]+", log, re.M)
    assert re.search(r"^warmup_prime steps:2 time:\d+ms$", log, re.M) and re.search(r"^quantize:clip time:\d+ms$", log, re.M)
    diag = DIAG_RE.search(log)
    assert diag and diag.start() > log.rfind("train_loss:"), "the DIAGNOSTIC line comes after training"
    assert 0 < diagnostic_bpb(log) < 8.5  # finite and plausible (the untrained model scores ~4.7 here)


def test_a_finished_distributed_run_leaves_without_tearing_down(ddp_and_single):
    """Past a meeting of every rank through the store (no message of the backend in flight), each rank leaves at
    once: the teardown of a gloo process group, racing a peer's, once aborted a finished rank 0 ("terminate called
    without an active exception", exit 1 after its last line). One process, with no process group, exits normally."""
    (ddp, _), (single, _) = ddp_and_single["ddp"], ddp_and_single["single"]
    assert ddp.returncode == 0 and [p.name for p in ddp.cwd.glob("torn_down_*")] == ["torn_down_-"]  # torchrun's own
    assert [p.name for p in single.cwd.glob("torn_down_*")] == ["torn_down_-"]


def test_two_processes_match_one_process(ddp_and_single):
    (_, ddp), (_, single) = ddp_and_single["ddp"], ddp_and_single["single"]
    assert abs(diagnostic_bpb(ddp) - diagnostic_bpb(single)) <= DIAG_TOL, (DIAG_RE.search(ddp)[0], DIAG_RE.search(single)[0])
    # The step-N evaluation (before weight averaging) agrees too.
    final_val = rf"^step:{DDP_ITERATIONS}/{DDP_ITERATIONS} val_loss:[\d.]+ val_bpb:([\d.]+)"
    assert abs(float(re.search(final_val, ddp, re.M)[1]) - float(re.search(final_val, single, re.M)[1])) <= DIAG_TOL
    # Every final evaluation the one-process run reports (roundtrip, sliding window, TTT), the
    # two-process run reports with the same bpb.
    exact_single = {name: float(bpb) for name, _, bpb in EXACT_RE.findall(single)}
    exact_ddp = {name: float(bpb) for name, _, bpb in EXACT_RE.findall(ddp)}
    assert exact_ddp.keys() == exact_single.keys()
    for name, bpb in exact_single.items():
        assert abs(exact_ddp[name] - bpb) <= EXACT_TOL, (name, exact_ddp[name], bpb)


def test_one_process_run_is_bit_identical_to_the_stored_default(ddp_and_single, tmp_path_factory):
    """Every figure of the tiny run (QAT, soft-round, SWA, the burst and TTT included; the roundtrip
    figures are the artifact's), against tests/data/golden.json within its stated tolerance: options
    that are off change nothing."""
    result, _ = ddp_and_single["single"]
    check_golden("tiny_one_process", run_lines(result.cwd / "logs" / "single.txt"))


def test_smoke_script_in_a_copy_of_the_repo(tmp_path):
    """scripts/smoke.sh builds the sample into the copy's data/sample and trains on it; the model
    learns something (post-EMA bpb below the step-0 bpb); its figures are the stored default's
    (tests/data/golden.json, within its stated tolerance).

    TTT_ENABLED=0 besides the short run: with the smoke configuration (11 blocks, 48k
    validation tokens, TTT_CHUNK_TOKENS=4096) the score-first TTT evaluation alone costs minutes of
    CPU; it is exercised by the tiny 2-process test above."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    shutil.copy2(REPO / "train_gpt.py", repo / "train_gpt.py")
    shutil.copy2(REPO / "data" / "make_sample.py", repo / "data" / "make_sample.py")
    shutil.copytree(REPO / "scripts", repo / "scripts")
    env = clean_environ(ITERATIONS="6", WARMDOWN_ITERS="3", VAL_LOSS_EVERY="6", RUN_ID="smoketest", TTT_ENABLED="0")
    result = run_script(["bash", "scripts/smoke.sh"], env, cwd=repo, timeout=300)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert sorted(p.name for p in (repo / "data" / "sample").iterdir()) == sorted(
        ["sample_1024_bpe.model", "fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin"])
    log = run_part(repo, "smoketest")
    assert '"data_path": "data/sample"' in log and '"num_layers": 11' in log  # smoke.env was applied
    step0 = re.search(r"^step:0/6 val_loss:([\d.]+) val_bpb:([\d.]+)", log, re.M)
    assert step0, log[-3000:]
    assert re.search(r"^step:6/6 val_loss:", log, re.M)
    post_ema = diagnostic_bpb(log)
    assert DIAG_RE.search(log)[1] == "ema"
    assert post_ema < float(step0[2]), (post_ema, step0[0])
    # the artifact quantises for real, the same tensors as at full size
    assert re.search(r"^quantized_tensors: int6:66 int8:3 passthrough:52$", log, re.M), log[-3000:]
    check_golden("smoke_6_steps", run_lines(repo / "logs" / "smoketest.txt"))


def test_the_golden_check_fails_when_an_option_that_is_off_changes_the_default_path(tiny_env, monkeypatch):
    """The tolerance is far tighter than a real change: a tiny run whose Muon row-normalises its updates
    before Newton-Schulz (as a later record's optimiser option does, here leaking into the default
    path) differs from the stored figures; the same run left alone matches them."""
    import train_gpt as tg
    tg.main()
    assert golden_differences("tiny_one_process", run_lines(Path("logs/tiny.txt"))) == []
    plain = tg.newton_schulz5
    monkeypatch.setattr(tg, "newton_schulz5", lambda g, *a, **k: plain(g / g.norm(dim=-1, keepdim=True).clamp_min(1e-7), *a, **k))
    monkeypatch.setenv("RUN_ID", "leaky")
    tg.main()
    differences = golden_differences("tiny_one_process", run_lines(Path("logs/leaky.txt")))
    assert len(differences) >= 10, differences  # nearly every line, from the second step's loss on
