"""Several command lines of one experiments CLI in one Python process (the bad-input tests): each
runs exactly as ``python -m MODULE ARGS...`` would (``experiments.common.cli`` on those flags),
with its exit status and stderr recorded, so the imports and JAX's start are paid once.

    python tests/cli_cases.py MODULE RESULTS.json '[["--flag", "value"], ...]'
"""

import contextlib
import importlib
import io
import json
import sys
import traceback
from pathlib import Path

from experiments.common import cli

module_name, results_path, cases = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
module = importlib.import_module(module_name)
results = []
for case in cases:
    sys.argv = [module_name, *case]
    stderr, status = io.StringIO(), 0
    with contextlib.redirect_stderr(stderr):
        try:
            cli(module.main, module.Args, module.__doc__)
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
        except Exception:  # noqa: BLE001  (reported like an uncaught error of the CLI)
            traceback.print_exc()
            status = 1
    results.append({"returncode": status, "stderr": stderr.getvalue()})
results_path.write_text(json.dumps(results))
