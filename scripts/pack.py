#!/usr/bin/env python3
"""Packs train_gpt.py into the self-extracting file a record submits: the source minified
(python-minifier: docstrings, local names, annotations other than class fields), compressed with
raw LZMA2, base85-encoded, under a two-line wrapper that unpacks it into UNPACKED_SOURCE and
exec()s it in the packed file's own globals.

    python scripts/pack.py                                   # train_gpt.py -> submission/train_gpt.py
    python scripts/pack.py --in train_gpt.py --out records/.../train_gpt.py [--no-minify]

The packed file runs as the plain one does (python or torchrun, or imported as a module). Its
counted code bytes are its own size (train_gpt.code_bytes() reads __file__), and its log starts
with the source it unpacked (train_gpt.own_source() reads UNPACKED_SOURCE). Before anything is
written, the minified source must compile and the packed file must unpack to exactly it; the file
is then written atomically (a temporary file, then renamed). Prints the sizes in bytes.
"""
from __future__ import annotations

import argparse
import base64
import builtins
import lzma
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MINIFIER = "python-minifier==3.4.0"  # the version requirements.txt pins
LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
# The wrapper: imports only what it needs, binds the source for own_source(), runs it in these globals.
# A raw LZMA2 decoder needs only the filter id (its default dictionary exceeds any source's size).
WRAPPER = ('import lzma,base64\n'
           'UNPACKED_SOURCE=lzma.decompress(base64.b85decode("{payload}"),format=lzma.FORMAT_RAW,'
           'filters=[{{"id":lzma.FILTER_LZMA2}}]).decode();exec(UNPACKED_SOURCE)\n')
PACKED_START = WRAPPER[:WRAPPER.index("{payload}")]  # how a packed file starts: packing one again is refused


class PackError(Exception):
    """Input the packer refuses: one line, exit status 1, nothing written."""


def minify_options() -> dict:
    """python-minifier's options that keep the program's behaviour, each stated rather than left to defaults."""
    from python_minifier import RemoveAnnotationsOptions
    return dict(
        remove_literal_statements=True,  # docstrings: train_gpt reads no __doc__
        # Hyperparameters lists its fields through __annotations__, and a @dataclass or NamedTuple needs
        # its fields' annotations: class-attribute annotations stay, the others go.
        remove_annotations=RemoveAnnotationsOptions(
            remove_variable_annotations=True, remove_return_annotations=True,
            remove_argument_annotations=True, remove_class_attribute_annotations=False),
        rename_locals=True,
        rename_globals=False,  # tools import the file as a module; UNPACKED_SOURCE is looked up by name
        hoist_literals=False,  # hoisting made the packed file larger (LZMA already shares repeated strings)
        remove_asserts=False,
        remove_debug=False,
    )


def minify(source: str) -> str:
    try:
        import python_minifier
    except ImportError:
        raise PackError(f"python-minifier is not installed: pip install {MINIFIER} (or pack with --no-minify)") from None
    try:
        return python_minifier.minify(source, **minify_options())
    except Exception as e:  # its own check of its output (UnstableMinification), or syntax it does not know
        raise PackError(f"python-minifier failed ({e.__class__.__name__}: {e}); pack with --no-minify") from None


def read_source(path: Path) -> str:
    """The input's text, refused unless it is a UTF-8 Python file that compiles and is not packed already."""
    if not path.is_file():
        raise PackError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PackError(f"{path}: cannot read it as UTF-8 text ({e.__class__.__name__}: {e})") from None
    compiles_or_refuse(source, str(path))
    if source.startswith(PACKED_START):
        raise PackError(f"{path}: already packed (it unpacks UNPACKED_SOURCE); pack the plain train_gpt.py")
    return source


def compiles_or_refuse(source: str, what: str):
    try:
        compile(source, what, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        where = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
        raise PackError(f"{what} does not compile{where}: {getattr(e, 'msg', e)}") from None


def packed_text(source: str) -> str:
    """The wrapper around the source, compressed and base85-encoded."""
    payload = base64.b85encode(lzma.compress(source.encode("utf-8"), format=lzma.FORMAT_RAW, filters=LZMA_FILTERS))
    return WRAPPER.format(payload=payload.decode("ascii"))


def unpacked_by_wrapper(packed: str) -> str | None:
    """What the packed file binds to UNPACKED_SOURCE: its own code, run with exec() stubbed out."""
    namespace = {"__builtins__": builtins, "__name__": "packed", "__file__": "packed.py", "exec": lambda *args, **kwargs: None}
    exec(compile(packed, "<packed>", "exec", dont_inherit=True), namespace)
    return namespace.get("UNPACKED_SOURCE")


def check_output_path(out: Path, source_path: Path):
    if out.is_dir():
        raise PackError(f"--out {out}: is a directory (name the file, e.g. {out / 'train_gpt.py'})")
    if out.exists() and out.resolve() == source_path.resolve():
        raise PackError(f"--out {out}: is the input; packing would replace the source")
    if out.parent.exists() and not out.parent.is_dir():
        raise PackError(f"--out {out}: {out.parent} is not a directory")


def write_atomically(path: Path, text: str):
    """path holds text, or is left as it was: a temporary file beside it (the usual file mode), then renamed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise PackError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def pack(source_path: Path, out: Path, minified: bool = True) -> dict:
    """Writes the packed file; returns the sizes in bytes (source, minified, packed)."""
    check_output_path(out, source_path)
    source = read_source(source_path)
    runs = minify(source) if minified else source
    compiles_or_refuse(runs, "the minified source")
    packed = packed_text(runs)
    if unpacked_by_wrapper(packed) != runs:
        raise PackError("the packed file does not unpack to the minified source; nothing written")
    write_atomically(out, packed)
    return dict(source=len(source.encode("utf-8")), minified=len(runs.encode("utf-8")), packed=len(packed.encode("utf-8")))


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise PackError(message)


def main(argv=None) -> int:
    parser = OneLineParser(prog="pack.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--in", dest="source", type=Path, default=REPO / "train_gpt.py", help="the source (default train_gpt.py)")
    parser.add_argument("--out", type=Path, default=REPO / "submission" / "train_gpt.py",
                        help="the packed file (default submission/train_gpt.py)")
    parser.add_argument("--no-minify", action="store_true", help="compress the source as it is (the log then holds it whole)")
    t0 = time.perf_counter()
    try:
        opts = parser.parse_args(argv)
        sizes = pack(opts.source, opts.out, minified=not opts.no_minify)
    except PackError as e:
        print(f"pack.py: error: {e}", file=sys.stderr)
        return 1
    minified = "not minified" if opts.no_minify else f"minified {sizes['minified']} bytes"
    print(f"{opts.out}: source {sizes['source']} bytes, {minified}, packed {sizes['packed']} bytes "
          f"({sizes['packed'] / sizes['source']:.1%} of the source), {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
