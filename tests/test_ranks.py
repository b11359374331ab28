"""How a run with several ranks stops: an error that only one rank meets reaches the user and the log
once (rank 0 reports it), a rank whose peer is gone stops with one line, a signal stops a run with one
line and an ERROR line at the end of its log, and a finished run leaves without tearing its process group
down (the teardown's threads could abort a finished process)."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

import train_gpt as tg
from conftest import CPU, REPO, run_lines, run_script, spawn_gloo, torchrun_cmd

SCRIPT = str(REPO / "train_gpt.py")


def _agree(rank, world_size, failing):
    rt = tg.Runtime(rank, world_size, CPU)
    try:
        with rt.agreed():
            if rank in failing: raise tg.InputError(f"shard {rank if len(failing) < world_size else 'x'} is short")
        return "passed"
    except tg.InputError as e:
        return str(e)


def test_the_start_up_agreement_stops_every_rank_with_every_rank_s_error():
    assert spawn_gloo(_agree, 2, ()) == ["passed", "passed"]
    assert spawn_gloo(_agree, 2, (1,)) == ["rank 1: shard 1 is short"] * 2  # rank 0 would otherwise wait in a collective
    assert spawn_gloo(_agree, 2, (0, 1)) == ["shard x is short"] * 2  # the same error everywhere: said as it is


def _stop_alone(rank, world_size, folder):
    import os
    os.chdir(folder)
    rt = tg.Runtime(rank, world_size, CPU)
    log = tg.Logger("ranks", enabled=rank == 0)
    try:
        with log.failures(rt):
            if rank == 1: raise tg.RunError("a file only rank 1 reads is damaged")
            dist.distributed_c10d._get_default_store().wait(["run_error/1"])  # rank 1 has failed and is leaving
            rt.all_reduce(torch.ones(1))  # its peer is gone
        return "finished"
    except tg.RunError as e:
        return str(e)


def test_an_error_only_one_rank_meets_is_reported_by_rank_0_and_logged(tmp_path):
    """Rank 1 fails alone while rank 0 goes on to a collective: rank 0's collective fails (the peer is gone),
    and rank 0 stops with rank 1's own message, the last line of the log, instead of the backend's traceback."""
    results = spawn_gloo(_stop_alone, 2, tmp_path)
    assert results == ["rank 1: a file only rank 1 reads is damaged", "a file only rank 1 reads is damaged"]
    assert (tmp_path / "logs" / "ranks.txt").read_text().splitlines()[-1] == "ERROR: rank 1: a file only rank 1 reads is damaged"


def _stop_among_three(rank, world_size, folder):
    """Rank 1 fails alone; ranks 0 and 2 are in a collective when it goes."""
    import os
    os.chdir(folder)
    rt = tg.Runtime(rank, world_size, CPU)
    try:
        with tg.Logger("three", enabled=rank == 0).failures(rt):
            if rank == 1: raise tg.RunError("only rank 1 met this")
            dist.distributed_c10d._get_default_store().wait(["run_error/1"])
            rt.all_reduce(torch.ones(1))
    except tg.RunError as e:
        return str(e), dist.distributed_c10d._get_default_store().check([f"run_error/{rank}"])


def test_with_three_ranks_the_error_is_the_failing_rank_s_alone():
    """Rank 2 also finds its peer gone, but publishes nothing of what it learnt: rank 0 reports rank 1's error once."""
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        results = spawn_gloo(_stop_among_three, 3, folder)
    assert results[0][0] == "rank 1: only rank 1 met this" and results[1] == ("only rank 1 met this", True)
    assert results[2][1] is False  # rank 2 published nothing


def _stopped_everywhere(rank, world_size):
    """A signal reaches every rank (Ctrl-C under torchrun): each stops; no rank publishes it as its own error."""
    rt = tg.Runtime(rank, world_size, CPU)
    rt.all_reduce(torch.ones(1))  # both ranks are up
    try:
        with tg.Logger("stopped", enabled=False).failures(rt):
            raise tg.Stopped(signal.SIGINT)
    except tg.RunError as e:
        rt.all_reduce(torch.ones(1))  # both have stopped before either looks
        return str(e), e.exit_code, rt.peer_errors()


def test_a_signal_on_every_rank_is_one_stop_not_a_peer_s_error():
    assert spawn_gloo(_stopped_everywhere, 2) == [("stopped by SIGINT", 130, "")] * 2


def test_under_torchrun_an_error_of_rank_1_alone_is_said_once(tiny_env, tmp_path):
    """Rank 1 alone reads a damaged shard header (a patched numpy.fromfile, through sitecustomize): both ranks stop
    at start, stderr holds rank 1's error once (rank 0 says it), the log ends with it, no traceback of ours."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import numpy\n"
        "    real = numpy.fromfile\n"
        "    numpy.fromfile = lambda path, *a, **k: real(path, *a, **k) * 0 if str(path).endswith('val_000000.bin') else real(path, *a, **k)\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = run_script(torchrun_cmd() + ["--standalone", "--nproc_per_node=2", SCRIPT], dict(tiny_env, PYTHONPATH=str(site)),
                        run_dir, timeout=240)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: rank 1: shard ") and "magic 0, expected 20240520" in errors[0], \
        result.stderr[-3000:]
    assert run_lines(run_dir / "logs" / "tiny.txt")[-1] == "ERROR: " + errors[0].removeprefix("error: ")
    assert f'File "{SCRIPT}"' not in result.stderr


def _wait_for(path: Path, text: str, process: subprocess.Popen, timeout: float = 120):
    end = time.monotonic() + timeout
    while time.monotonic() < end and process.poll() is None:
        if path.is_file() and text in path.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never reached {path}")


def test_a_signal_stops_the_run_with_one_line_and_says_so_in_the_log(tiny_env, tmp_path):
    """SIGTERM (a scheduler, or torchrun stopping the ranks) and SIGINT (Ctrl-C) in the middle of training: one
    line, no KeyboardInterrupt traceback, the log's last line says the run was stopped, exit 128 + the signal."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        name = signal.Signals(signum).name
        run_dir = tmp_path / name
        run_dir.mkdir()
        env = dict(tiny_env, ITERATIONS="100000", WARMDOWN_ITERS="0", RUN_ID="stopped")
        process = subprocess.Popen([sys.executable, SCRIPT], env=env, cwd=run_dir, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        _wait_for(run_dir / "logs" / "stopped.txt", "step:3/100000 train_loss", process)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 128 + signum, stderr[-2000:]
        assert stderr.strip() == f"error: stopped by {name}"
        assert run_lines(run_dir / "logs" / "stopped.txt")[-1] == f"ERROR: stopped by {name}"
