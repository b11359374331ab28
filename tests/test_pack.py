"""scripts/pack.py: the packed submission file (minified, raw LZMA2, base85, exec'd by a two-line
wrapper) runs as train_gpt.py does, logs the source it unpacked and counts its own size as the code,
imports as a module, stays small; bad input is refused in one line with nothing written."""
import functools
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GOLDEN_LINE, REPO, RULE, TINY, load_tool, make_args, model_env_removed, run_lines, run_script, tiny_run_env

pack_tool = load_tool("scripts/pack.py", "pack")
PACK = [sys.executable, str(REPO / "scripts" / "pack.py")]

# Measured: scripts/pack.py on the 98,949-byte train_gpt.py (python-minifier 3.4.0, Python 3.11) wrote a minified
# source of 65,165 bytes, packed in 25,670. The bound is that plus 15 %: the file grows with features, and the bound only
# catches packing that broke (packed without minifying: 35,305 bytes; minified but not compressed: 65,165).
PACKED_BYTES_BOUND = 29_500
# The same measure that does not move with the source's length: packed / source was 0.259 (0.357 unminified).
PACKED_FRACTION_BOUND = 0.30
SIZES_LINE = re.compile(r"^(\S+): source (\d+) bytes, (?:minified (\d+) bytes|not minified), packed (\d+) bytes "
                        r"\([\d.]+% of the source\), [\d.]+ s$")
TIMING = re.compile(r"(?<=:)[\d.]+m?s\b")  # train_time:86ms step_avg:85.84ms elapsed:1.5s
CODE_SIZE_FIGURES = re.compile(r"^(Code size: |size_estimate: .*; with the code |Total submission size \S+ )(\d+) bytes$")


def pack_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(PACK + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    """The repo's train_gpt.py packed by the command line into a fresh folder (created by pack.py)."""
    out = tmp_path_factory.mktemp("submission") / "record" / "train_gpt.py"
    result = pack_cli("--out", out)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    sizes = SIZES_LINE.fullmatch(result.stdout.strip())
    assert sizes, result.stdout
    assert sizes[1] == str(out) and int(sizes[2]) == os.path.getsize(REPO / "train_gpt.py") and int(sizes[4]) == os.path.getsize(out)
    assert int(sizes[3]) == len(minified_source().encode("utf-8"))
    return out


def small_program(folder: Path) -> Path:
    path = folder / "program.py"
    path.write_text('"""A docstring."""\nprint("ran", 6 * 7)\n', encoding="utf-8")
    return path


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@functools.cache
def minified_source() -> str:
    return pack_tool.minify((REPO / "train_gpt.py").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def plain_and_packed(tiny_data, packed, tmp_path_factory) -> dict:
    """The tiny configuration (every stage: QAT, SWA, the burst, the artifact, TTT) run by train_gpt.py and by
    the packed file, each as its own process in its own folder, with the same RUN_ID."""
    runs = {}
    for name, script in (("plain", REPO / "train_gpt.py"), ("packed", packed)):
        cwd = tmp_path_factory.mktemp(name)
        result = run_script([sys.executable, str(script)], tiny_run_env(tiny_data, OMP_NUM_THREADS="1", RUN_ID="pack"), cwd=cwd)
        assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        log = cwd / "logs" / "pack.txt"
        runs[name] = dict(cwd=cwd, script=script, log=log.read_text(encoding="utf-8"), lines=run_lines(log))
    return runs


def code_size_figures(lines: list[str]) -> dict:
    """The three figures that count the code, by the line's first word: Code (size), size_estimate: (its
    total with the code), Total (submission size)."""
    found = {m[1].split()[0]: int(m[2]) for line in lines if (m := CODE_SIZE_FIGURES.match(line))}
    assert found.keys() == {"Code", "size_estimate:", "Total"}, found
    return found


def test_the_packed_file_runs_as_the_plain_one(plain_and_packed):
    """Same machine, same configuration: every line of the run is the same, timings and the code's byte
    counts aside: training losses, evaluations and every _exact figure to the last digit; and the
    artifacts are the same bytes."""
    plain, packed = (plain_and_packed[name] for name in ("plain", "packed"))
    comparable = [[TIMING.sub("T", CODE_SIZE_FIGURES.sub(r"\1N bytes", line)) for line in run["lines"]] for run in (plain, packed)]
    assert comparable[0] == comparable[1]
    figures = [line for line in packed["lines"] if GOLDEN_LINE.match(line)]
    assert len([f for f in figures if "train_loss" in f]) == int(TINY["iterations"])
    assert {line.split()[0] for line in figures if "_exact" in line} == {
        "final_int6_roundtrip_exact", "final_int6_sliding_window_exact", "final_ttt_exact"}
    assert (plain["cwd"] / "final_model.int6.ptz").read_bytes() == (packed["cwd"] / "final_model.int6.ptz").read_bytes()


def test_the_packed_log_carries_the_unpacked_source_and_the_packed_size(plain_and_packed):
    """The packed run's log starts with the minified source it ran; its code size, the size estimate at start
    and the total submission size count the packed file's own bytes (the plain run's, the plain file's)."""
    plain, packed = (plain_and_packed[name] for name in ("plain", "packed"))
    assert packed["log"].startswith(minified_source() + "\n" + RULE + "\n")
    assert plain["log"].startswith((REPO / "train_gpt.py").read_text(encoding="utf-8") + "\n" + RULE + "\n")
    code = {name: os.path.getsize(run["script"]) for name, run in plain_and_packed.items()}
    assert code["packed"] < code["plain"]
    figures = {name: code_size_figures(run["lines"]) for name, run in plain_and_packed.items()}
    for name, run in plain_and_packed.items():
        model_bytes = int(re.search(r"^Serialized model int6\+zstd: (\d+) bytes$", run["log"], re.M)[1])
        assert figures[name]["Code"] == code[name]
        assert figures[name]["Total"] == model_bytes + code[name]
    # The size estimate at start: the same estimate of the model plus each file's own size.
    assert figures["packed"]["size_estimate:"] - code["packed"] == figures["plain"]["size_estimate:"] - code["plain"]


def test_the_packed_size_stays_under_its_bound(packed):
    size = os.path.getsize(packed)
    assert size < PACKED_BYTES_BOUND, f"packed {size} bytes"
    assert size / os.path.getsize(REPO / "train_gpt.py") < PACKED_FRACTION_BOUND, f"packed {size} bytes"


def test_no_minify_packs_the_source_whole(packed, tmp_path):
    """--no-minify: the packed file unpacks to the source byte for byte (docstrings and all), and is larger."""
    out = tmp_path / "train_gpt.py"
    result = pack_cli("--no-minify", "--out", out)
    assert result.returncode == 0 and SIZES_LINE.fullmatch(result.stdout.strip())[3] is None, result
    assert pack_tool.unpacked_by_wrapper(out.read_text()) == (REPO / "train_gpt.py").read_text(encoding="utf-8")
    assert os.path.getsize(packed) < os.path.getsize(out) < os.path.getsize(REPO / "train_gpt.py")


def test_the_packed_file_imports_as_a_module_without_running(packed, tmp_path, monkeypatch, capsys):
    """Imported under another name than __main__: no run (nothing printed, no logs/), and the module's
    Hyperparameters (its fields, kept by the minifier) and build_model are those of train_gpt.py."""
    import train_gpt as tg
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("packed_train_gpt", packed)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # as an import does: dataclasses look the module up
    spec.loader.exec_module(module)
    assert capsys.readouterr().out == "" and not (tmp_path / "logs").exists()
    assert module.UNPACKED_SOURCE == minified_source() == module.own_source()
    assert module.code_bytes() == os.path.getsize(packed)
    assert module.Hyperparameters.defaults() == tg.Hyperparameters.defaults()
    with model_env_removed():
        model = module.build_model(module.Hyperparameters(**TINY))
    plain = tg.build_model(make_args(TINY))
    assert [(n, p.shape) for n, p in model.named_parameters()] == [(n, p.shape) for n, p in plain.named_parameters()]


def test_a_small_program_packs_and_runs(tmp_path):
    """The wrapper is two lines and the program it unpacks runs as __main__."""
    out = tmp_path / "packed.py"
    assert pack_cli("--in", small_program(tmp_path), "--out", out).returncode == 0
    assert len(out.read_text().splitlines()) == 2  # the wrapper: imports, then unpack and exec
    run = subprocess.run([sys.executable, str(out)], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout) == (0, "ran 42\n"), run.stderr


BAD_INPUTS = {  # name: (arguments, given the folder of the case; what the one line says)
    "missing input": (lambda d: ["--in", d / "missing.py", "--out", d / "out.py"], "missing.py: no such file"),
    "input is a folder": (lambda d: ["--in", d, "--out", d / "out.py"], ": not a file"),
    "input not UTF-8": (lambda d: ["--in", write(d / "latin1.py", b"s = '\xe9'\n"), "--out", d / "out.py"], "as UTF-8"),
    "input does not compile": (lambda d: ["--in", write(d / "bad.py", b"def f(:\n"), "--out", d / "out.py"],
                               "bad.py does not compile (line 1)"),
    "input already packed": (lambda d: ["--in", write(d / "packed.py", pack_tool.packed_text("print(1)\n").encode()),
                                        "--out", d / "out.py"], "packed.py: already packed"),
    "output is a folder": (lambda d: ["--out", d], "is a directory"),
    "output is the input": (lambda d: ["--in", small_program(d), "--out", d / "program.py"], "is the input"),
    "output's folder is a file": (lambda d: ["--out", write(d / "file", b"") / "out.py"], "is not a directory"),
    "unknown option": (lambda d: ["--minify-globals"], "unrecognized arguments: --minify-globals"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path):
    arguments, message = BAD_INPUTS[case]
    args = arguments(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = pack_cli(*args, cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == "", result
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("pack.py: error: ") and message in result.stderr, result.stderr
    assert sorted(tmp_path.rglob("*")) == before


def minifier_fails(monkeypatch):
    import python_minifier
    monkeypatch.setattr(python_minifier, "minify", lambda source, **options: 1 / 0)


def packed_text_with_other_source(monkeypatch):
    packed_text = pack_tool.packed_text
    monkeypatch.setattr(pack_tool, "packed_text", lambda source: packed_text(source + "# other\n"))


def rename_fails(monkeypatch):
    def no_space(source, destination):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(pack_tool.os, "replace", no_space)


FAULTS = {  # what goes wrong: (how, given the MonkeyPatch; the start of the one line)
    "minifier not installed": (lambda patch: patch.setitem(sys.modules, "python_minifier", None),
                               "python-minifier is not installed: pip install python-minifier==3.4.0"),
    "minifier fails": (minifier_fails, "python-minifier failed (ZeroDivisionError: division by zero)"),
    "minified source does not compile": (lambda patch: patch.setattr(pack_tool, "minify", lambda source: "def broken(:\n"),
                                         "the minified source does not compile (line 1)"),
    "packed file unpacks to other text": (packed_text_with_other_source, "the packed file does not unpack to the minified source"),
    "the rename fails": (rename_fails, "cannot write {out}: No space left on device"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failed_step_leaves_the_output_as_it_was(fault, tmp_path, monkeypatch, capsys):
    """The minifier missing or failing, the checks pack.py makes of its own result (a minifier that wrote
    broken code, a packed file that does not unpack to what was minified), a full disk: one line, the
    output already there left whole, no temporary file left."""
    cause, message = FAULTS[fault]
    cause(monkeypatch)
    out = write(tmp_path / "out.py", b"the earlier file\n")
    assert pack_tool.main(["--in", str(small_program(tmp_path)), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"pack.py: error: {message.format(out=out)}") and len(err.splitlines()) == 1, err
    assert out.read_bytes() == b"the earlier file\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.py", "program.py"]


def test_the_output_is_replaced_whole(tmp_path):
    """A longer file already at --out is replaced, not overwritten in place: nothing of it remains."""
    out = write(tmp_path / "out.py", b"x" * 100_000)
    assert pack_cli("--in", small_program(tmp_path), "--out", out).returncode == 0
    assert pack_tool.unpacked_by_wrapper(out.read_text()) == pack_tool.minify(small_program(tmp_path).read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.py", "program.py"]
