# Two entry points: `make demo` and `make test`. Both set up .venv with pip on a fresh machine.
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed

.PHONY: demo test lit pytest lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# torch/torchvision pinned for CI and development (they come from the local disk here)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[torch,tf,test,bench,serve]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests
	PATH=$(CURDIR)/.venv/bin:$$PATH .venv/bin/lit -q filecheck_tests

lint: $(STAMP)
	.venv/bin/ruff check brainslug tests

demo: $(STAMP)
	$(PY) examples/demo.py

clean:
	rm -rf .venv
