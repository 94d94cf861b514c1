"""The branch timed in headless Chromium as the browser client runs it (``profile --branch``).

The page (``static/profile-branch.js``) runs the stem in onnxruntime-web, the branch on the bit kernels and
the same branch in onnxruntime-web, in turns. The figures go into the browser profile's ``branch`` block,
where ``plan --profile mobile=browser.json --branch DIR`` takes them instead of the branch's host times
scaled by a device preset: the real cost of the branch on the engine the phone's page uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dnnsplit.branching.branch_file import load_branch
from dnnsplit.errors import UsageError
from dnnsplit.models.export import file_sha256
from dnnsplit.profiling.profile import BranchTiming
from dnnsplit.progress import ProgressFn, no_progress

PAGE = """async (cfg) => {
  const { profileBranch } = await import('./profile-branch.js');
  const get = async (u) => (await fetch(u)).arrayBuffer();
  const program = cfg.program ? await get('/branch.dnbk') : null;
  const [stem, branch] = [await get('/stem.onnx'), await get('/branch.onnx')];
  return await profileBranch({ ...cfg, stem, branch, program });
}"""


def _mobile_file(directory: Path) -> tuple[Path, str]:
    """The branch's mobile.onnx and its sha256, checked against what branch.yaml recorded."""
    branch = load_branch(directory)
    mobile = directory / branch.files.get("mobile", "mobile.onnx")
    if not mobile.is_file():
        raise UsageError(f"{mobile} not found", "re-run dnnsplit branch")
    sha256 = file_sha256(mobile)
    recorded = branch.files.get("mobile_sha256")
    if recorded and recorded != sha256:
        raise UsageError(
            f"{mobile} is not the file {directory / 'branch.yaml'} recorded (sha256 differs)",
            "re-run dnnsplit branch",
        )
    return mobile, sha256


def check_branch_directory(directory: str | Path, model_sha256: str | None = None) -> None:
    """Fail now, before minutes of measuring, on a branch directory that cannot be timed (or was built for
    another model than the one profiled: ``model_sha256``, its ONNX export's)."""
    from dnnsplit.partition.request import check_branch_model

    directory = Path(directory)
    _mobile_file(directory)
    if model_sha256 is not None:
        check_branch_model(load_branch(directory).costs(directory), model_sha256)


def time_branch_in_browser(
    directory: str | Path,
    *,
    threads: int = 1,
    warmup: int = 5,
    repeat: int = 20,
    progress: ProgressFn = no_progress,
) -> BranchTiming:
    """Median (and p90) stem and branch times of the branch in ``directory`` in headless Chromium."""
    from dnnsplit.branching.kernels import Unsupported, branch_model, compile_branch, stem_model
    from dnnsplit.browser import check_vendor
    from dnnsplit.browser.chromium import chromium_page
    from dnnsplit.profiling.browser_runtime import local_page_server

    directory = Path(directory)
    branch = load_branch(directory)
    mobile, sha256 = _mobile_file(directory)
    check_vendor()
    files = {
        "/stem.onnx": stem_model(mobile).SerializeToString(),
        "/branch.onnx": branch_model(mobile).SerializeToString(),
    }
    unavailable = ""
    try:
        files["/branch.dnbk"] = compile_branch(mobile).to_bytes()
    except Unsupported as exc:
        unavailable = f"the bit kernels lack a layer of this branch: {exc}"
    config = {
        "program": "/branch.dnbk" in files,
        "unavailable": unavailable,
        "inputShape": [1, *branch.input_shape[1:]],
        "threshold": branch.threshold,
        "warmup": warmup,
        "repeat": repeat,
        "threads": threads,
    }
    progress("timing the branch in the browser", 0, 1)
    with local_page_server(b"", files) as url, chromium_page(timeout_s=600) as (page, _console):
        page.goto(f"{url}/profile.html")
        page.wait_for_load_state("load")
        result = page.evaluate(PAGE, config)
    progress("timing the branch in the browser", 1, 1)
    times = {k: np.asarray(v, dtype=float) for k, v in result["times"].items()}
    engine = str(result["engine"])
    on_engine = times["kernels"] if engine == "kernels" else times["onnxruntime"]
    return BranchTiming(
        directory=str(directory),
        at=branch.at,
        mobile_sha256=sha256,
        engine=engine,
        stem_ms=float(np.median(times["stem"])),
        stem_p90_ms=float(np.percentile(times["stem"], 90)),
        branch_ms=float(np.median(on_engine)),
        branch_p90_ms=float(np.percentile(on_engine, 90)),
        onnxruntime_branch_ms=float(np.median(times["onnxruntime"])),
        binary_layers=int(result["binary_layers"]),
        repeat=repeat,
        reason=str(result["reason"]),
    )
