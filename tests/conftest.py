"""Test-wide settings."""

import os

# optimize() measures each plan against the model and keeps the faster (see
# brainslug.frontend_torch.speed). Tests check what plans compute, so they
# keep every plan; tests/test_speed_guard.py turns the measurement back on.
os.environ.setdefault("BRAINSLUG_SPEED_CHECK", "0")

# an error while compiling raises instead of leaving a stack to the framework
# (brainslug.plan.compile.strict); tests of that fallback turn it off
os.environ.setdefault("BRAINSLUG_STRICT", "1")
