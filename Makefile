# Two commands on a fresh machine with Python 3.10+:
#   make demo   install into .venv (first time only), then train both and compare them
#   make test   install into .venv (first time only), then lint and run every test
#   make exercises   write exercises/: manual/ with the functions for you to write taken out
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test docs bench exercises

# make test shares the test files out between the cores (pytest-xdist), the longest first, and
# runs torch on one thread in each process (conftest.py).
TESTS := $(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder

$(VENV)/installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

demo: $(VENV)/installed
	$(BIN)/python compare.py $(ARGS)

test: $(VENV)/installed
	$(BIN)/ruff check .
	$(TESTS)

# make docs: regenerate docs/side_by_side.html from the source (the tests fail while it is stale)
docs: $(VENV)/installed
	$(BIN)/python docs/build_side_by_side.py

# make exercises: write exercises/, then grade it with python -m pytest --manual exercises
exercises: $(VENV)/installed
	$(BIN)/python -m practice exercises
