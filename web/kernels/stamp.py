"""Record what `make wasm` built: web/kernels/bitkernels.json (the source's and the module's sha256,
the compiler and the flags). tests/branching/test_kernels.py checks the committed module against it."""

import hashlib
import json
import sys
from pathlib import Path

source, module, compiler, *flags = sys.argv[1:]
digest = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in (source, module)}
record = {
    "source": source,
    "source_sha256": digest[source],
    "module": module,
    "module_sha256": digest[module],
    "module_bytes": Path(module).stat().st_size,
    "compiler": compiler,
    "flags": flags,
}
Path(source).with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
print(f"{module}: {record['module_bytes']} bytes, sha256 {digest[module][:16]}")
