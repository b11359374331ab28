"""data/cached_challenge_fineweb.py against a local stand-in for the Hugging Face Hub.

A thread serves a small copy of the dataset repo's layout over HTTP the way the Hub's /resolve
endpoint does (HEAD and GET, with X-Repo-Commit / ETag / Content-Length), and the REAL
huggingface_hub client downloads from it (HF_ENDPOINT). The server counts requests per path. (The client also makes a best-effort GET of
/api/agent-harnesses, its own once-a-day registry look-up; the tests only count repo files.)
"""
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from conftest import REPO, load_tool, write_shard

dl = load_tool("data/cached_challenge_fineweb.py", "cached_challenge_fineweb")

SCRIPT = REPO / "data" / "cached_challenge_fineweb.py"
RESOLVE = f"/datasets/{dl.REPO_ID}/resolve/main/"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
DS = "datasets/fineweb10B_sp1024"  # relative to the repo's datasets/ folder and to the output folder
TOKENIZER = ["tokenizers/fineweb_1024_bpe.model", "tokenizers/fineweb_1024_bpe.vocab"]
VAL = [f"{DS}/fineweb_val_000000.bin"]
TRAIN = [f"{DS}/fineweb_train_{i:06d}.bin" for i in range(3)]


def make_manifest(files_train=3, files_val=1):
    """A manifest of the dataset repo's shape (that of tests/data/manifest_example.json), at toy size."""
    return {
        "version": "10B", "num_docs": 100, "num_val_docs": 10, "shard_size": 1000,
        "tokenizers": [{"name": "sp_bpe_1024", "kind": "sentencepiece_bpe", "vocab_size": 1024, "bos_id": 1,
                        "eos_id": 2, "model_path": TOKENIZER[0], "vocab_path": TOKENIZER[1]}],
        "datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024",
                      "tokenizer_kind": "sentencepiece_bpe", "path": DS,
                      "train_glob": f"{DS}/fineweb_train_*.bin", "val_glob": f"{DS}/fineweb_val_*.bin",
                      "vocab_size": 1024, "bos_id": 1, "eos_id": 2,
                      "stats": {"files_total": files_train + files_val, "files_val": files_val,
                                "files_train": files_train}}],
    }


def shard_bytes(tmp: Path, n_tokens: int, seed: int) -> bytes:
    path = tmp / f"shard_{seed}.bin"
    write_shard(path, np.random.default_rng(seed).integers(0, 1024, n_tokens))
    return path.read_bytes()


class FakeHub(ThreadingHTTPServer):
    """files: repo path (e.g. 'datasets/manifest.json') -> bytes. requests: Counter of (method, repo path)."""
    daemon_threads = True

    def __init__(self, files):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.requests = Counter()
        self.lock = threading.Lock()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def gets(self, prefix=""):
        """Repo paths (under datasets/, prefix stripped) that were GET, with counts."""
        return Counter({p[len("datasets/"):]: n for (m, p), n in self.requests.items()
                        if m == "GET" and p.startswith("datasets/" + prefix)})

    def data_gets(self):
        """GETs of anything but the manifest."""
        return Counter({p: n for p, n in self.gets().items() if p != "manifest.json"})


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _serve(self, body: bool):
        path = urlsplit(self.path).path
        rel = unquote(path[len(RESOLVE):]) if path.startswith(RESOLVE) else path
        with self.server.lock:
            self.server.requests[(self.command, rel)] += 1
        data = self.server.files.get(rel) if path.startswith(RESOLVE) else None
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound" if path.startswith(RESOLVE) else "RepoNotFound")
            self.send_header("X-Error-Message", "Entry not found")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub_files")
    files = {"datasets/manifest.json": json.dumps(make_manifest(), indent=1).encode(),
             f"datasets/{TOKENIZER[0]}": b"\x0a\x0bnot really a sentencepiece model" * 10,
             f"datasets/{TOKENIZER[1]}": b"<unk>\t0\n<s>\t0\n</s>\t0\n"}
    for i, rel in enumerate(VAL + TRAIN):
        files[f"datasets/{rel}"] = shard_bytes(tmp, 500 + 37 * i, seed=i)
    return files


def _clean_hf_env(monkeypatch, tmp_path):
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                "HF_HUB_DISABLE_XET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "3")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "3")


@pytest.fixture
def hub(repo_files, monkeypatch, tmp_path):
    """A running FakeHub with a fresh copy of the repo files; HF_ENDPOINT points at it."""
    server = FakeHub(dict(repo_files))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _clean_hf_env(monkeypatch, tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def out(tmp_path):
    return tmp_path / "data"


def run(out, capsys, *args):
    """main() in-process; returns (exit code, stdout lines, stderr lines)."""
    rc = dl.main(["--variant", "sp1024", "--out-dir", str(out), *args])
    captured = capsys.readouterr()
    return rc, captured.out.splitlines(), captured.err.splitlines()


def layout(out: Path):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def test_first_run_fetches_requested_files(hub, out, capsys):
    rc, lines, err = run(out, capsys, "--train-shards", "2")
    assert rc == 0, err
    wanted = TOKENIZER + VAL + TRAIN[:2]
    assert layout(out) == sorted(wanted + ["datasets/manifest.json"])  # staging folder removed
    for rel in wanted:
        assert (out / rel).read_bytes() == hub.files[f"datasets/{rel}"], rel
    assert hub.data_gets() == Counter({rel: 1 for rel in wanted})  # each requested file once, nothing else
    assert not any(p.endswith(TRAIN[2]) for _, p in hub.requests)
    assert sum(line.startswith("fetched") for line in lines) == len(wanted)
    assert lines[-1].startswith("done: 5 fetched, 0 already complete")
    assert "1 val shard (" in lines[-1] and "2 train shards" in lines[-1] and str(out / DS) in lines[-1]


def test_default_is_80_train_shards_capped_at_the_manifest(hub, out, capsys):
    rc, lines, err = run(out, capsys)
    assert rc == 0, err
    assert all((out / rel).is_file() for rel in TRAIN)
    assert any("capped" in line for line in lines)
    assert set(hub.data_gets()) == set(TOKENIZER + VAL + TRAIN)


def test_second_run_fetches_nothing(hub, out, capsys):
    assert run(out, capsys, "--train-shards", "2")[0] == 0
    before = Counter(hub.requests)
    rc, lines, err = run(out, capsys, "--train-shards", "2")
    assert rc == 0, err
    new = {key for key in hub.requests - before if key[1].startswith("datasets/")}  # repo files only
    # only the manifest is refreshed; no data file is even asked about (no HEAD, no GET)
    assert new == {("HEAD", "datasets/manifest.json"), ("GET", "datasets/manifest.json")}
    assert sum(line.startswith("already complete") for line in lines) == 5
    assert lines[-1].startswith("done: 0 fetched, 5 already complete")


@pytest.mark.parametrize("damage", ["truncate", "bad_magic", "empty"])
def test_damaged_local_shard_is_fetched_again(hub, out, capsys, damage):
    assert run(out, capsys, "--train-shards", "2")[0] == 0
    victim = out / TRAIN[1]
    good = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(good[:-10])
    elif damage == "bad_magic":
        victim.write_bytes(b"\0\0\0\0" + good[4:])
    else:
        victim.write_bytes(b"")
    before = hub.data_gets()
    rc, lines, err = run(out, capsys, "--train-shards", "2")
    assert rc == 0, err
    assert hub.data_gets() - before == Counter({TRAIN[1]: 1})  # exactly that one
    assert victim.read_bytes() == good
    assert [line for line in lines if line.startswith("fetched")] == \
        [line for line in lines if TRAIN[1] in line and line.startswith("fetched")]


def test_missing_tokenizer_file_is_fetched_again(hub, out, capsys):
    assert run(out, capsys, "--train-shards", "0")[0] == 0
    (out / TOKENIZER[1]).unlink()
    before = hub.data_gets()
    assert run(out, capsys, "--train-shards", "0")[0] == 0
    assert hub.data_gets() - before == Counter({TOKENIZER[1]: 1})


@pytest.mark.parametrize("corruption", ["magic", "version", "size"])
def test_corrupt_served_shard_is_reported(hub, out, capsys, corruption):
    key = f"datasets/{TRAIN[1]}"
    data = bytearray(hub.files[key])
    if corruption == "magic":
        data[0:4] = np.array([12345], "<i4").tobytes()
    elif corruption == "version":
        data[4:8] = np.array([2], "<i4").tobytes()
    else:
        data = data[:-2]  # the header promises one token more than the file holds
    hub.files[key] = bytes(data)
    rc, lines, err = run(out, capsys, "--train-shards", "3")
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert "fineweb_train_000001.bin" in err[0] and "Traceback" not in err[0]
    assert {"magic": "magic 12345", "version": "version 2", "size": "truncated or corrupt"}[corruption] in err[0]
    assert not (out / TRAIN[1]).exists()  # the bad file is not left under its final name
    assert (out / TRAIN[0]).is_file() and not (out / TRAIN[2]).exists()  # stops at the bad one


def test_file_missing_on_server_is_reported(hub, out, capsys):
    del hub.files[f"datasets/{TRAIN[2]}"]
    rc, lines, err = run(out, capsys, "--train-shards", "3")
    assert rc == 1
    assert len(err) == 1 and "fineweb_train_000002.bin" in err[0] and "no such file" in err[0], err


@pytest.mark.parametrize("broken, message", [
    (lambda m: m["tokenizers"].clear(), "tokenizer 'sp_bpe_1024'"),
    (lambda m: m["datasets"][0].pop("stats"), "missing stats"),
    (lambda m: m["datasets"][0].pop("tokenizer_name"), "missing tokenizer_name"),
    (lambda m: m["tokenizers"][0].pop("vocab_path"), "missing vocab_path"),
    (lambda m: m["datasets"][0]["stats"].update(files_train="many"), "stats.files_train"),
])
def test_missing_manifest_entry_is_reported(hub, out, capsys, broken, message):
    manifest = make_manifest()
    broken(manifest)
    hub.files["datasets/manifest.json"] = json.dumps(manifest).encode()
    rc, lines, err = run(out, capsys)
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not hub.data_gets()


def test_manifest_not_json_is_reported(hub, out, capsys):
    hub.files["datasets/manifest.json"] = b"<html>not json</html>"
    rc, lines, err = run(out, capsys)
    assert rc == 1 and len(err) == 1 and "not valid JSON" in err[0], err


def test_offline_mode(hub, out, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, lines, err = run(out, capsys)  # nothing local yet: a clear error, no request
    assert rc == 1 and len(err) == 1 and "HF_HUB_OFFLINE" in err[0], err
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert run(out, capsys, "--train-shards", "1")[0] == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = Counter(hub.requests)
    rc, lines, err = run(out, capsys, "--train-shards", "1")  # complete: works without network
    assert rc == 0, err
    assert hub.requests == before
    rc, lines, err = run(out, capsys, "--train-shards", "2")  # one more shard needs the network
    assert rc == 1 and len(err) == 1 and "HF_HUB_OFFLINE" in err[0] and "fineweb_train_000001.bin" in err[0], err


def cli(args, env_extra, cwd):
    env = {k: v for k, v in os.environ.items()}
    env.update(env_extra)
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_unknown_variant_lists_the_known_ones(hub, out, tmp_path):
    manifest = make_manifest()
    manifest["datasets"].append(dict(manifest["datasets"][0], name="fineweb10B_sp4096"))
    hub.files["datasets/manifest.json"] = json.dumps(manifest).encode()
    proc = cli(["--variant", "sp8192", "--out-dir", str(out)], {}, tmp_path)  # env: the hub fixture's
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown variant 'sp8192'"), err
    assert "sp1024, sp4096" in err[0]
    assert "fetched          datasets" not in proc.stdout
    assert not hub.data_gets()


def test_server_down_is_one_line_and_quick(tmp_path, monkeypatch):
    _clean_hf_env(monkeypatch, tmp_path)
    with socket.socket() as s:  # a port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    proc = cli(["--variant", "sp1024", "--out-dir", str(tmp_path / "data")],
               {"HF_ENDPOINT": f"http://127.0.0.1:{port}"}, tmp_path)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1
    err = proc.stderr.splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("error: cannot reach http://127.0.0.1:") and "manifest.json" in err[0], err
    assert elapsed < 20


def test_negative_train_shards_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        dl.parse_args(["--train-shards", "-1"])
    assert e.value.code == 2


def test_plan_from_manifest_of_the_reference_shape():
    # tests/data/manifest_example.json: an example manifest of the dataset repo at full size (1 val, 195 train shards)
    manifest = json.loads((REPO / "tests" / "data" / "manifest_example.json").read_text())
    plan = dl.plan_from_manifest(manifest, "sp1024", 80)
    assert plan["tokenizer"] == TOKENIZER
    assert plan["val"] == [f"{DS}/fineweb_val_000000.bin"]
    assert plan["train"] == [f"{DS}/fineweb_train_{i:06d}.bin" for i in range(80)]
