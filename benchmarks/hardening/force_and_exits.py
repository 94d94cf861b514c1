"""Issue 23.1 (``--force`` / ``--output`` never delete what dnnsplit did not write) and 23.6 (exit codes
CI can trust: user text printed literally; hostile sizes, bytes and paths are one line and exit 2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from benchmarks.hardening import ROOT, TINY, Case, CliResult, Observed, dnnsplit, tiny_split

SPLIT = (TINY, "--input-shape", "1x3x32x32", "--cut", "/stem/stem.2/Relu_output_0", "--validate", "1")
DEMO = ROOT / "dnnsplit" / "pipeline" / "demo.yaml"
FAST = ("--input-shape", "1x3x32x32", "--repeat", "1", "--warmup", "0", "--threads", "1")
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def _user_files(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "thesis.tex").write_text("years of work")
    (directory / "data").mkdir(exist_ok=True)
    (directory / "data" / "x.csv").write_text("1,2\n")
    return directory


def _intact(directory: Path) -> bool:
    return (directory / "thesis.tex").is_file() and (directory / "data" / "x.csv").is_file()


def _refused_and_kept(result: CliResult, directory: Path) -> Observed:
    seen = result.one_line()
    kept = _intact(directory)
    return Observed(seen.ok and kept, f"{seen.text}; user files {'kept' if kept else 'GONE'}")


# -- 1 force ---------------------------------------------------------------------------------------------


def _split_force_here(spelling: str, cwd_of: Callable[[Path], Path]) -> Callable[[Path], Observed]:
    def run(work: Path) -> Observed:
        _user_files(work)
        (work / "sub").mkdir()
        (work / "link").symlink_to(work)
        result = dnnsplit("split", *SPLIT, "--output", spelling, "--force", cwd=cwd_of(work))
        return _refused_and_kept(result, work)

    return run


def _here(work: Path) -> Path:
    return work


def _sub(work: Path) -> Path:
    return work / "sub"


def _split_force_foreign_file(work: Path) -> Observed:
    out = tiny_split(work / "segments")
    (out / "notes.txt").write_text("mine")
    seen = dnnsplit("split", *SPLIT, "--output", out, "--force").one_line()
    kept = (out / "notes.txt").is_file() and (out / "manifest.yaml").is_file()
    return Observed(seen.ok and kept, f"{seen.text}; notes.txt {'kept' if kept else 'GONE'}")


def _split_force_replaces_split(work: Path) -> Observed:
    out = tiny_split(work / "segments")
    before = (out / "manifest.yaml").stat().st_mtime_ns
    result = dnnsplit("split", *SPLIT, "--output", f"{out}/", "--force")
    names = sorted(p.name for p in out.iterdir())
    left = sorted(p.name for p in work.iterdir() if p.name != "segments")
    ok = result.code == 0 and names == ["01-mobile.onnx", "02-edge.onnx", "manifest.yaml"] and not left
    ok = ok and (out / "manifest.yaml").stat().st_mtime_ns != before
    return Observed(ok, f"exit {result.code}; {len(names)} files, leftovers beside it: {left or 'none'}")


def _split_force_other_kind(work: Path) -> Observed:
    variants = work / "variants"
    variants.mkdir()
    (variants / "variants.yaml").write_text("schema: dnnsplit/variants@1\nvariants: []\n")
    seen = dnnsplit("split", *SPLIT, "--output", variants, "--force").one_line()
    kept = (variants / "variants.yaml").is_file()
    return Observed(seen.ok and kept, f"{seen.text}; variants.yaml {'kept' if kept else 'GONE'}")


def _split_force_foreign_manifest(work: Path) -> Observed:
    k8s = _user_files(work / "k8s")
    (k8s / "manifest.yaml").write_text("apiVersion: v1\nkind: Pod\n")
    return _refused_and_kept(dnnsplit("split", *SPLIT, "--output", k8s, "--force"), k8s)


def _branch_force(work: Path) -> Observed:
    out = _user_files(work / "out")
    result = dnnsplit(
        "branch", "tests.fixtures.tiny_models:digits_net", "--input-shape", "1x3x16x16",
        "--data", "digits", "--output", out, "--force", timeout=120,
    )
    return _refused_and_kept(result, out)


def _prune_force(work: Path) -> Observed:
    out = _user_files(work / "out")
    result = dnnsplit(
        "prune", "tests.fixtures.tiny_models:digits_net", "--input-shape", "1x3x16x16",
        "--data", "digits", "--budgets", "10", "--output", out, "--force", timeout=120,
    )
    return _refused_and_kept(result, out)


def _pipeline_output(work: Path) -> Observed:
    config = work / "dnnsplit.yaml"
    config.write_text(DEMO.read_text())
    out = _user_files(work / "busy")
    (out / "report.md").write_text("my own report")
    observed = _refused_and_kept(dnnsplit("pipeline", config, "--output", out, timeout=120), out)
    kept = (out / "report.md").read_text() == "my own report"
    return Observed(observed.ok and kept, observed.text + ("" if kept else "; report.md overwritten"))


def _init_force(work: Path) -> Observed:
    (work / "dnnsplit.yaml").write_text("something: else\n")
    seen = dnnsplit("init", "--force", cwd=work).one_line()
    kept = (work / "dnnsplit.yaml").read_text() == "something: else\n"
    return Observed(seen.ok and kept, f"{seen.text}; the file {'kept' if kept else 'OVERWRITTEN'}")


FORCE = "1 force"
KEPT = "exit 2, one line; every user file still there"
FORCE_CASES = [
    Case(FORCE, "split --output . --force in a directory of user files", KEPT, _split_force_here(".", _here)),
    Case(FORCE, "split --output .. --force from a subdirectory", KEPT, _split_force_here("..", _sub)),
    Case(FORCE, "split --output ./ --force (trailing slash)", KEPT, _split_force_here("./", _here)),
    Case(FORCE, "split --output LINK --force, LINK -> user files", KEPT, _split_force_here("link", _here)),
    Case(FORCE, "split --force over a split holding the user's notes.txt", "exit 2; notes.txt kept",
         _split_force_foreign_file),
    Case(FORCE, "split --force over a clean split (DIR/)", "exit 0; replaced, nothing left beside it",
         _split_force_replaces_split),
    Case(FORCE, "split --force over a prune output (variants.yaml)", "exit 2; variants.yaml kept",
         _split_force_other_kind),
    Case(FORCE, "split --force over somebody else's manifest.yaml", KEPT, _split_force_foreign_manifest),
    Case(FORCE, "branch --output DIR --force, DIR of user files", KEPT, _branch_force),
    Case(FORCE, "prune --output DIR --force, DIR of user files", KEPT, _prune_force),
    Case(FORCE, "pipeline --output DIR, DIR of user files (and a report.md)", KEPT, _pipeline_output),
    Case(FORCE, "init --force over a dnnsplit.yaml of another tool", "exit 2; file kept", _init_force),
]


# -- 6 exit codes ----------------------------------------------------------------------------------------


def _literal(name: str) -> Callable[[Path], Observed]:
    def run(work: Path) -> Observed:
        result = dnnsplit("profile", work / name)
        seen = result.one_line()
        shown = name in result.stderr
        return Observed(seen.ok and shown, f"{seen.text}" + ("" if shown else f"; '{name}' not shown as is"))

    return run


def _one_line(*args: str | Path, timeout: float = 120) -> Callable[[Path], Observed]:
    return lambda _work: dnnsplit(*args, timeout=timeout).one_line()


def _huge_onnx(work: Path) -> Observed:
    from onnx import TensorProto, helper, save

    dims = [1, 3, 100000, 100000]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "huge",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
    )
    save(helper.make_model(graph), str(work / "huge.onnx"))
    return dnnsplit("profile", work / "huge.onnx", "--repeat", "1", "--threads", "1").one_line()


def _non_utf8(command: str) -> Callable[[Path], Observed]:
    def run(work: Path) -> Observed:
        bad = work / "bad.yaml"
        bad.write_bytes(b"schema: dnnsplit/pipeline@1\nname: \xff\xfe\n")
        args = ("pipeline", bad, "--check") if command == "pipeline" else ("plan", bad)
        return dnnsplit(*args).one_line()

    return run


def _quick(make: Callable[[Path], tuple[str | Path, ...]]) -> Callable[[Path], Observed]:
    """Exit 2 within a minute (a hang counts as exit 124); the probe prints how long it took."""
    return lambda work: dnnsplit(*make(work), timeout=60).one_line()


def _bomb_config(work: Path) -> tuple[str | Path, ...]:
    (work / "bomb.yaml").write_text(DEMO.read_text() + BOMB)
    return ("pipeline", work / "bomb.yaml", "--check")


def _loop_profile(work: Path) -> tuple[str | Path, ...]:
    (work / "loop.yaml").write_text("schema: dnnsplit/profile@1\nlayers: &l [*l]\n")
    return ("plan", work / "loop.yaml")


def _output_dir(work: Path) -> Observed:
    (work / "p.json").mkdir()
    return dnnsplit("profile", TINY, *FAST, "--output", work / "p.json").one_line()


def _threads_run(work: Path) -> Observed:
    segs = tiny_split(work / "segs")
    import numpy as np

    np.save(work / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    return dnnsplit("run", segs, "--input", work / "x.npy", "--threads", "100000", timeout=60).one_line()


def _config(old: str, new: str, key: str) -> Callable[[Path], Observed]:
    def run(work: Path) -> Observed:
        text = DEMO.read_text()
        assert old in text
        (work / "dnnsplit.yaml").write_text(text.replace(old, new, 1))
        result = dnnsplit("pipeline", work / "dnnsplit.yaml", "--check")
        named = f"{key}:" in result.stderr
        last = (result.error_lines() or ["(no stderr)"])[-1]
        ok = result.code == 2 and named and "Traceback" not in result.stderr
        return Observed(ok, f"exit {result.code}: {last[:150]}")

    return run


def _config_markup(work: Path) -> Observed:
    text = DEMO.read_text().replace("  lr: 0.05", "  '[/]lr': 0.05\n  lr: '[bold]x'", 1)
    (work / "dnnsplit.yaml").write_text(text)
    result = dnnsplit("pipeline", work / "dnnsplit.yaml", "--check")
    ok = result.code == 2 and "[/]lr" in result.stderr and "[bold]x" in result.stderr
    ok = ok and "Traceback" not in result.stderr
    last = (result.error_lines() or ["(no stderr)"])[-1]
    return Observed(ok, f"exit {result.code}, {len(result.error_lines())} line(s): {last[:150]}")


def _top_run(work: Path) -> Observed:
    import numpy as np

    segs = tiny_split(work / "segs")
    np.save(work / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    return dnnsplit("run", segs, "--input", work / "x.npy", "--top", "-1").one_line()


EXITS = "6 exit codes"
EXIT2 = "exit 2, one line, no traceback"
NAN = ("  lr: 0.05", "  lr: .nan")
INF = ("  latency_ms: 60 ", "  latency_ms: .inf ")
THREADS = ("  threads: 2 ", "  threads: 100000 ")
EXIT_CASES = [
    Case(EXITS, "a path holding '[/]' in an error", "exit 2, the path as typed", _literal("x[/]y.onnx")),
    Case(EXITS, "a path holding [bold] in an error", "exit 2, '[bold]' kept", _literal("x[bold]y[/b].onnx")),
    Case(EXITS, "config key '[/]lr', value '[bold]x' (--check)", "exit 2, both as written", _config_markup),
    Case(EXITS, "--input-shape 100000x3x10000x10000 (120 TB)", EXIT2,
         _one_line("profile", TINY, "--input-shape", "100000x3x10000x10000")),
    Case(EXITS, "an ONNX file declaring a 1x3x100000x100000 input", EXIT2, _huge_onnx),
    Case(EXITS, "a non-UTF-8 pipeline config (--check)", EXIT2, _non_utf8("pipeline")),
    Case(EXITS, "a non-UTF-8 profile file (plan)", EXIT2, _non_utf8("plan")),
    Case(EXITS, "a YAML alias bomb in the config (4.9e8 nodes)", "exit 2 in seconds", _quick(_bomb_config)),
    Case(EXITS, "a recursive YAML alias in a profile (plan)", "exit 2 in seconds", _quick(_loop_profile)),
    Case(EXITS, "profile --output /proc/x.json", "exit 2 before measuring",
         _one_line("profile", TINY, *FAST, "--output", "/proc/x.json")),
    Case(EXITS, "profile --output DIR.json, an existing directory", EXIT2, _output_dir),
    Case(EXITS, "split --output /proc/segments", "exit 2 before exporting",
         _one_line("split", *SPLIT, "--output", "/proc/segments")),
    Case(EXITS, "profile --threads 100000", "exit 2 in seconds, no hang",
         _quick(lambda _w: ("profile", TINY, *FAST[:-2], "--threads", "100000"))),
    Case(EXITS, "run DIR --threads 100000", "exit 2, no hang", _threads_run),
    Case(EXITS, "pipeline --check, train.lr: .nan", "exit 2 naming train.lr", _config(*NAN, "train.lr")),
    Case(EXITS, "pipeline --check, budgets.latency_ms: .inf", "exit 2 naming budgets.latency_ms",
         _config(*INF, "budgets.latency_ms")),
    Case(EXITS, "pipeline --check, profile.threads: 100000", "exit 2 naming profile.threads",
         _config(*THREADS, "profile.threads")),
    Case(EXITS, "profile --top -1", EXIT2, _one_line("profile", TINY, *FAST, "--top", "-1")),
    Case(EXITS, "run DIR --top -1", EXIT2, _top_run),
]

CASES: list[Case] = FORCE_CASES + EXIT_CASES
