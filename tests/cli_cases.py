"""Several experiments command lines in one Python process (the --help and bad-input tests): each
runs exactly as ``python -m MODULE ARGS...`` would (``experiments.common.cli`` on those flags),
with its exit status, stdout and stderr recorded, so the imports and JAX's start are paid once.

    python tests/cli_cases.py RESULTS.json '[["MODULE", "--flag", "value"], ...]'
"""

import contextlib
import importlib
import io
import json
import sys
import traceback
from pathlib import Path

from experiments.common import cli

results_path, cases = Path(sys.argv[1]), json.loads(sys.argv[2])
results = []
for module_name, *args in cases:
    module = importlib.import_module(module_name)
    sys.argv = [module_name, *args]
    stdout, stderr, status = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            cli(module.main, module.Args, module.__doc__)
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
        except Exception:  # noqa: BLE001  (reported like an uncaught error of the CLI)
            traceback.print_exc()
            status = 1
    results.append({"returncode": status, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
results_path.write_text(json.dumps(results))
