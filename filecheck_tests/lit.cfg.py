"""lit configuration: every *.mlir below runs its RUN lines with bs-opt and filecheck."""

import os
import shutil

import lit.formats

config.name = "brainslug"  # noqa: F821
config.test_format = lit.formats.ShTest(execute_external=False)  # noqa: F821
config.suffixes = [".mlir"]  # noqa: F821
config.test_source_root = os.path.dirname(__file__)  # noqa: F821
config.excludes = ["lit.cfg.py"]  # noqa: F821

# prefer the project's virtualenv when it exists
venv_bin = os.path.join(os.path.dirname(config.test_source_root), ".venv", "bin")  # noqa: F821
path = config.environment.get("PATH", os.environ.get("PATH", ""))  # noqa: F821
if os.path.isdir(venv_bin):
    path = venv_bin + os.pathsep + path
config.environment["PATH"] = path  # noqa: F821
for tool in ("bs-opt", "filecheck"):
    if shutil.which(tool, path=path) is None:
        lit_config.fatal(f"{tool} not found on PATH; run `make test` to set up .venv")  # noqa: F821
