"""Runs that cannot go on: each stops with one line naming the problem (stderr and the log's last
line), a non-zero exit, and no earlier model file damaged. Diverged training, non-finite
evaluation, a full disk, bad paths, token ids beyond the vocabulary."""
import io
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zstandard

import train_gpt as tg
from conftest import ONE, REPO, run_lines, run_script, spawn_gloo, torchrun_cmd, write_shard

SCRIPT = str(REPO / "train_gpt.py")
OLD_FILES = {tg.RAW_MODEL_PATH: b"an earlier run's raw model", tg.ARTIFACT_PATH: b"an earlier run's artifact"}


def plant_old_files(cwd):
    for name, data in OLD_FILES.items():
        (cwd / name).write_bytes(data)


def assert_old_files_intact(cwd):
    for name, data in OLD_FILES.items():
        assert (cwd / name).read_bytes() == data, f"{name} was overwritten"
    assert not list(cwd.glob(".*.tmp")), "a temporary file was left behind"


def assert_one_line_failure(result, *fragments) -> str:
    """Exit 1, stderr exactly one 'error: ...' line holding the fragments, and the same message as
    the log's last line (ERROR: ...). Returns the message."""
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    message = lines[0].removeprefix("error: ")
    for fragment in fragments:
        assert fragment in message, message
    return message


def run_part(cwd, run_id="tiny") -> str:
    """The run's own lines of its log, as one text."""
    return "\n".join(run_lines(cwd / "logs" / f"{run_id}.txt"))


def last_log_line(cwd, run_id="tiny") -> str:
    return run_lines(cwd / "logs" / f"{run_id}.txt")[-1]


def test_diverged_training_stops_at_the_step_and_writes_nothing(tiny_env, tmp_path):
    plant_old_files(tmp_path)
    result = run_script([sys.executable, SCRIPT], dict(tiny_env, MATRIX_LR="1e9"), tmp_path)
    message = assert_one_line_failure(result, "training loss is not finite at step", "no model or artifact was written")
    assert last_log_line(tmp_path) == f"ERROR: {message}"
    step = int(message.split("at step ")[1].split(":")[0])
    log = run_part(tmp_path)
    assert f"step:{step - 1}/" in log and f"step:{step}/" not in log  # stopped at the first bad step
    assert "DIAGNOSTIC" not in log and "Serialized model" not in log
    assert_old_files_intact(tmp_path)


def test_non_finite_evaluation_is_an_error(tiny_env, tmp_path, monkeypatch):
    args = tg.Hyperparameters()
    container = tg.quantize_state_dict(tg.build_model(args).state_dict(), args.passthrough_max_numel)
    weights = container["w"]
    key = "tok_emb.weight.scale" if "tok_emb.weight.scale" in weights else "tok_emb.weight"
    weights[key].view(-1)[0] = float("nan")  # one row of the tied embedding: NaN logits
    path = tmp_path / "nan.ptz"
    path.write_bytes(tg.compress_artifact(container))
    monkeypatch.setenv("EVAL_ARTIFACT", str(path))
    with pytest.raises(tg.RunError, match="evaluation loss is nan"):
        tg.main()
    assert last_log_line(tmp_path).startswith("ERROR: evaluation loss is nan")
    assert "final_int6_roundtrip_exact" not in run_part(tmp_path)


def test_loss_and_bpb_refuses_non_finite_sums():
    assert tg.loss_and_bpb(torch.tensor([2.0, 4.0, 8.0], dtype=torch.float64)) == pytest.approx((0.5, 0.25 / np.log(2)))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(tg.RunError, match="not finite"):
            tg.loss_and_bpb(torch.tensor([bad, 4.0, 8.0], dtype=torch.float64))


def limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_full_disk_writes_neither_model_file(tiny_env, tmp_path):
    """Files larger than 200 kB cannot be written (the log fits, the raw model does not): the run
    ends with one line, the earlier pair of model files stays as it was."""
    plant_old_files(tmp_path)
    result = subprocess.run([sys.executable, SCRIPT], env=dict(os.environ, **tiny_env), cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, preexec_fn=limit_file_size(200_000))
    message = assert_one_line_failure(result, "cannot write", "nothing was written")
    assert last_log_line(tmp_path) == f"ERROR: {message}"
    assert_old_files_intact(tmp_path)


def test_atomic_write_of_several_files_is_all_or_nothing(tmp_path):
    first, second = tmp_path / "a.pt", tmp_path / "missing_dir" / "b.ptz"
    first.write_bytes(b"old")
    with pytest.raises(tg.RunError, match=r"cannot write .*b\.ptz.*nothing was written"):
        tg.atomic_write({first: b"new", second: b"new"})
    assert first.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]
    tg.atomic_write({first: b"one", tmp_path / "c": b"two"})
    assert first.read_bytes() == b"one" and (tmp_path / "c").read_bytes() == b"two"


def test_a_failed_start_ends_its_log_with_the_error(tiny_env, tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENIZER_PATH", str(tmp_path))
    with pytest.raises(tg.InputError, match="is a directory, not a file"):
        tg.main()
    assert last_log_line(tmp_path) == f"ERROR: TOKENIZER_PATH {tmp_path} is a directory, not a file"


@pytest.mark.parametrize("variable", ["TOKENIZER_PATH", "EVAL_ARTIFACT"])
def test_a_directory_is_not_called_missing(tiny_env, tmp_path, monkeypatch, variable):
    (tmp_path / "folder").mkdir()
    monkeypatch.setenv(variable, str(tmp_path / "folder"))
    with pytest.raises(tg.InputError, match=f"^{variable} .*folder is a directory, not a file$"):
        tg.main()


def test_a_shard_that_is_a_directory_is_one_line(tiny_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for f in tiny_data.glob("fineweb_*.bin"):
        (data / f.name).write_bytes(f.read_bytes())
    (data / "fineweb_train_000007.bin").mkdir()
    with pytest.raises(tg.InputError, match=r"^shard .*fineweb_train_000007.bin is a directory, not a file$"):
        tg.list_shards(data, "train")


def test_a_file_named_logs_is_one_line(tiny_env, tmp_path):
    (tmp_path / "logs").write_text("not a folder")
    result = run_script([sys.executable, SCRIPT], tiny_env, tmp_path)
    assert_one_line_failure(result, "logs exists but is not a directory")


def test_unsafe_artifact_message_says_why_without_pytorch_advice(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this would run",))

    buffer = io.BytesIO()
    torch.save({"w": {}, "m": {}, "x": Payload()}, buffer)
    path = tmp_path / "evil.ptz"
    path.write_bytes(zstandard.ZstdCompressor().compress(buffer.getvalue()))
    with pytest.raises(tg.InputError) as caught:
        tg.load_artifact(path)
    message = str(caught.value)
    assert message.startswith(f"artifact {path} refused: it holds a Python object (")
    assert "print) that loading would create" in message
    assert "\n" not in message
    for advice in ("weights_only", "trust", "safe_globals", "Weights only load failed"):
        assert advice not in message


@pytest.mark.parametrize("variable, value, expected", [("NUM_LAYERS", "abc", "an integer"),
                                                       ("MATRIX_LR", "fast", "a finite number"),
                                                       ("MATRIX_LR", "nan", "a finite number")])
def test_type_errors_name_the_type_in_words(variable, value, expected):
    with pytest.raises(tg.InputError, match=f"^{variable}='{value}' is not valid: expected {expected}$"):
        tg.Hyperparameters(**{variable.lower(): value})


def test_token_ids_are_checked_before_training(tiny_env, tmp_path, monkeypatch, tiny_data):
    """An id >= VOCAB_SIZE in the last train shard stops the run at start, naming the shard, before
    any training step (it used to surface when the stream first reached that shard)."""
    data = tmp_path / "data"
    data.mkdir()
    for f in tiny_data.iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    shards = tg.list_shards(data, "train")
    tokens = np.array(tg.read_shard(shards[-1]))
    tokens[len(tokens) // 2] = int(tiny_env["VOCAB_SIZE"])
    write_shard(shards[-1], tokens)
    monkeypatch.setenv("DATA_PATH", str(data))
    with pytest.raises(tg.InputError, match=rf"^shard {shards[-1]} holds token id {tiny_env['VOCAB_SIZE']}, not below VOCAB_SIZE"):
        tg.main()
    log = run_part(tmp_path)
    assert "step:" not in log and "model_params" not in log



def _check_on_rank(rank, world_size, shards, vocab):
    """check_token_ids on one gloo rank: (the shards this rank read, the error message or '')."""
    read = []
    real = tg.read_shard
    tg.read_shard = lambda f: read.append(Path(f).name) or real(f)
    try:
        tg.check_token_ids(shards, vocab, tg.Runtime(rank, world_size, torch.device("cpu")))
        return read, ""
    except tg.InputError as e:
        return read, str(e)
    finally:
        tg.read_shard = real


def test_token_id_check_shares_the_shards_and_every_rank_stops(tmp_path):
    """On 2 ranks each reads every other shard; a bad id in a shard rank 1 never reads stops both
    ranks with the same line naming that shard."""
    shards = [tmp_path / f"fineweb_train_{i:06d}.bin" for i in range(3)]
    for i, path in enumerate(shards):
        write_shard(path, np.arange(10) + 100 * i)  # largest ids 9, 109, 209
    results = spawn_gloo(_check_on_rank, 2, shards, 200)
    assert [read for read, _ in results] == [[shards[0].name, shards[2].name], [shards[1].name]]
    expected = f"shard {shards[2]} holds token id 209, not below VOCAB_SIZE=200 (another tokenizer's data?)"
    assert [error for _, error in results] == [expected, expected]
    assert spawn_gloo(_check_on_rank, 2, shards, 210) == [([shards[0].name, shards[2].name], ""), ([shards[1].name], "")]


@pytest.mark.parametrize("case", ["diverged", "logs_is_a_file"])
def test_under_torchrun_every_rank_stops_and_the_error_is_said_once(tiny_env, tmp_path, case):
    """2 gloo processes: both ranks stop (no hang), and stderr holds the error once, not per rank."""
    env = dict(tiny_env)
    if case == "diverged":
        env["MATRIX_LR"] = "1e9"
        expected = "error: training loss is not finite at step"
    else:
        (tmp_path / "logs").write_text("not a folder")
        expected = "error: rank 0: logs exists but is not a directory"  # rank 0 alone keeps the folder
    result = run_script(torchrun_cmd() + ["--standalone", "--nproc_per_node=2", SCRIPT], env, tmp_path, timeout=240)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(expected), result.stderr[-3000:]
    assert f'File "{SCRIPT}"' not in result.stderr  # no traceback of ours (torchrun prints its own report)


def test_atomic_write_says_truthfully_what_a_failed_rename_left(tmp_path, monkeypatch):
    first, folder = tmp_path / "final_model.pt", tmp_path / "final_model.int6.ptz"
    first.write_bytes(b"old")
    folder.mkdir()  # a directory where the artifact goes: refused before anything is written
    with pytest.raises(tg.RunError, match=r"final_model\.int6\.ptz: it is a directory; nothing was written$"):
        tg.atomic_write({first: b"new", folder: b"new"})
    assert first.read_bytes() == b"old"
    folder.rmdir()
    real, calls = os.replace, []
    monkeypatch.setattr(tg.os, "replace", lambda a, b: calls.append(b) or (real(a, b) if len(calls) == 1 else _fail()))
    with pytest.raises(tg.RunError, match=rf"cannot write {folder}: gone; {first} already replaced$"):
        tg.atomic_write({first: b"new", folder: b"new"})
    assert first.read_bytes() == b"new" and not folder.exists() and not list(tmp_path.glob(".*.tmp"))


def _fail():
    raise OSError("gone")


def test_a_log_that_cannot_be_written_stops_the_run_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = tg.Logger("full", enabled=True)

    class FullFile:
        name = "logs/full.txt"

        def write(self, text):
            raise OSError(28, "No space left on device")

    log.file = FullFile()
    with pytest.raises(tg.RunError, match="^cannot write the log logs/full.txt: No space left on device$"):
        with log.failures(ONE):  # the ERROR line itself cannot be written either: the first error stands
            log("step:1/10 train_loss:6.9")


def test_a_read_only_working_folder_is_one_line_and_the_log_ends_with_it(tiny_env, tmp_path, monkeypatch):
    """A folder where nothing can be created, logs/ aside (a read-only file system with a writable logs/):
    the temporary files cannot be made, their cleanup fails the same way, and the run stops with the write's
    own error as the last line of its log."""
    real_open = open

    def read_only(path, mode="r", *args, **kwargs):
        if "w" in mode and Path(path).parent.name != "logs":
            raise OSError(30, "Read-only file system")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(tg, "open", read_only, raising=False)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: read_only(self, "w"))
    with pytest.raises(tg.RunError, match=r"^cannot write final_model\.pt: Read-only file system; nothing was written$"):
        tg.main()
    assert last_log_line(tmp_path) == "ERROR: cannot write final_model.pt: Read-only file system; nothing was written"


def test_coprime_loader_with_every_shard_shorter_than_a_sequence_is_refused_at_start(tiny_env, tmp_path, monkeypatch):
    data = tmp_path / "short"
    data.mkdir()
    for name in ("fineweb_train_000000.bin", "fineweb_train_000001.bin"):
        write_shard(data / name, np.arange(20) % 50)  # 20 tokens each: a sequence needs 33
    (data / "fineweb_val_000000.bin").write_bytes((Path(tiny_env["DATA_PATH"]) / "fineweb_val_000000.bin").read_bytes())
    monkeypatch.setenv("DATA_PATH", str(data))
    monkeypatch.setenv("LOADER", "coprime")
    with pytest.raises(tg.InputError, match=r"^LOADER=coprime reads each sequence from one shard, and no training shard "
                                            r"holds TRAIN_SEQ_LEN \+ 1 = 33 tokens$"):
        tg.main()
    assert "step:1/" not in run_part(tmp_path)
    monkeypatch.setenv("LOADER", "stream")  # the stream loader reads across shard ends: the same shards train
    monkeypatch.setenv("ITERATIONS", "1")
    tg.main()


def test_raw_weights_given_as_the_artifact_are_named_for_what_they_are(tmp_path):
    path = tmp_path / "final_model.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(tg.InputError, match=r"is a torch.save file \(the raw weights, final_model.pt\?\), not a compressed "
                                            r"artifact \(final_model.int6.ptz\)$"):
        tg.load_artifact(path)


def test_a_misspelt_hyperparameter_stops_the_run(tiny_env, monkeypatch):
    monkeypatch.setenv("MATIX_LR", "1e9")
    with pytest.raises(tg.InputError, match=r"^MATIX_LR is not a hyperparameter: did you mean MATRIX_LR\? \(unset it to go on\)$"):
        tg.main()
    tg.check_variable_names({"MATRIX_LR": "1", "SEEDS": "1,2", "PATH": "/bin", "OMP_NUM_THREADS": "1", "RANK": "0"})


def test_more_int6_matrices_than_the_model_has_is_refused_at_start(tiny_env, monkeypatch):
    monkeypatch.setenv("QUANT_METHOD", "gptq")
    monkeypatch.setenv("INT6_MATRICES", "25")
    with pytest.raises(tg.InputError, match=r"^INT6_MATRICES=25 is more than the 24 int6 matrices of this model$"):
        tg.main()


def test_the_log_check_cannot_race_rank_0_making_the_folder(tmp_path, monkeypatch):
    """Rank 0 makes logs/ while the other ranks start: a rank that looked while the folder appeared once called
    it 'not a directory' and stopped alone, silently. Only rank 0 checks the folder, in an order that the
    folder's appearing cannot fool; the other ranks learn its outcome from the start-up agreement."""
    monkeypatch.chdir(tmp_path)
    real_exists = Path.exists

    def appearing(self):  # rank 0's mkdir lands just before this look
        (tmp_path / "logs").mkdir(exist_ok=True)
        return real_exists(self)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "exists", appearing)
        tg.Logger("other_rank", enabled=False)
        assert tg.Logger("main", enabled=True).file is not None
    (tmp_path / "logs" / "main.txt").unlink()
    (tmp_path / "logs").rmdir()
    (tmp_path / "logs").write_text("a file")
    tg.Logger("other_rank", enabled=False)  # rank 0 finds it; the agreement tells the others
    with pytest.raises(tg.InputError, match="^logs exists but is not a directory"):
        tg.Logger("main", enabled=True)
