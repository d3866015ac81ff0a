# The two README commands: `make demo` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean lstm agent prometheus

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: the CPU build on this disk, so nothing pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/rlscale demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# integration tests need Debian's prometheus binary: install it when missing and possible (root + apt);
# without it they skip, except under CI=true, where they fail
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		prometheus >/dev/null; } || echo "note: prometheus not installed; integration tests will skip"

test: $(STAMP) lint prometheus
	$(BIN)/python -m pytest -q

# IPA's LSTM load predictor: retrain the bundled weights (agents/data/README.md)
lstm: $(STAMP)
	$(BIN)/python -m agents.lstm --out agents/data/lstm_predictor.npz

# The bundled PPO agents (agents/data/ppo_<pipeline>.zip): train on training windows and bundle (a few minutes each)
agent: $(STAMP)
	$(BIN)/rlscale train --pipeline video --timesteps 300000 --seed 0 --out runs --bundle
	$(BIN)/rlscale train --pipeline sum-qa --timesteps 200000 --seed 0 --out runs --bundle

clean:
	rm -rf $(VENV) build *.egg-info
