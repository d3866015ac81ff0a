# The two README commands: `make demo` and `make test`. Both create .venv if it is missing. `make test-fast` is the
# edit loop (the fast tier of DESIGN section 12).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
RUNTIME_LOCK := requirements/runtime.txt
SERVE_LOCK := requirements/serve.txt
# `make lock` runs pip-tools from its own venv, at a pinned version, so the lock does not depend on what .venv holds
LOCK_VENV := .venv-lock
PIP_TOOLS := pip-tools==7.6.2
COMPILE := $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --all-build-deps --strip-extras \
	--no-emit-index-url --no-emit-find-links -c requirements/torch.txt

.PHONY: demo test test-fast test-latest lock lint venv clean lstm agent prometheus

# Exact versions with hashes from the lock file (requirements/lock.txt, made by `make lock`); --no-deps so that
# nothing outside the lock is ever resolved, and `pip check` proves the locked set is complete.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: the 2.13.0 CPU build on this disk, so nothing pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet --no-deps torch==2.13.0
	$(BIN)/pip install --quiet --no-deps --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/rlscale demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# integration tests need Debian's prometheus binary: install it when missing and possible (root + apt);
# without it they skip, except under CI=true, where they fail
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		prometheus >/dev/null; } || echo "note: prometheus not installed; integration tests will skip"

# The test tiers are markers (pyproject.toml): slow (full episodes, sweeps, long comparisons), e2e (live Prometheus,
# MLServer, Ray; trainings), subprocess (runs the rlscale entry point as a process). `make test` is what CI runs: the
# lint and every tier, in parallel over the cores (pytest-xdist). --dist loadfile sends each test file to one worker,
# so a module's servers (MLServer, Ray) and the session's tiny trained model (tests/conftest.py) start once; not
# loadgroup, whose xdist_group marks pytest 9.2 silently ignores (pytest-xdist issue 1386).
# `make test-fast` leaves out slow, e2e and subprocess: no server, no training, no process.
PYTEST_WORKERS ?= auto
test: $(STAMP) lint prometheus
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

FAST := not slow and not e2e and not subprocess
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "$(FAST)"

# IPA's LSTM load predictor: retrain the bundled weights (agents/data/README.md)
lstm: $(STAMP)
	$(BIN)/python -m agents.lstm --out rlscale/data/lstm_predictor.npz

# The bundled PPO agents (agents/data/ppo_<pipeline>.npz, numpy actors): one objective-conditioned agent per pipeline,
# trained on training windows (sampled weights and load scales) and bundled, each the checkpoint with the best
# validation margin over IPA; 7-15 min each on 2 cores (agents/data/README.md, experiments/RESULTS.md section 10)
AGENT_OUT := runs/agents-$(shell date +%Y%m%d-%H%M%S)
AGENT_FLAGS = --seed 0 --eval-traces none --checkpoint-every 25000 --checkpoint-minutes 0 --out $(AGENT_OUT)
agent: $(STAMP)
	$(BIN)/rlscale train --pipeline video --timesteps 300000 --name video $(AGENT_FLAGS) --bundle
	$(BIN)/rlscale train --pipeline sum-qa --timesteps 300000 --prior ipa --reward-scale load --name sum-qa \
	  $(AGENT_FLAGS) --bundle
	for p in audio-qa audio-sent nlp resnet; do \
	  $(BIN)/rlscale train --pipeline $$p --timesteps 150000 --name $$p $(AGENT_FLAGS) --bundle || exit 1; \
	done
	$(BIN)/rlscale train --pipeline infadapter --timesteps 150000 --damping 1 --max-load-scale 1.2 \
	  --load-scale-rps 200 --reconfig-penalty 0.2 --weights spec --name infadapter $(AGENT_FLAGS) --seed 1 --bundle
	$(BIN)/rlscale train --pipeline sponge --timesteps 100000 --name sponge $(AGENT_FLAGS) --bundle

# Regenerate the lock files from pyproject.toml's ranges (Python 3.11, this platform): lock.txt holds the runtime, test,
# training, ray and serve dependencies (what make installs), runtime.txt the runtime ones at the same versions, without
# torch or mlserver (what the sidecar image installs), serve.txt the runtime ones and the serve extra's (mlserver), at
# the same versions (what the stage image, docker/stage.Dockerfile, installs).
# --upgrade takes the newest versions the ranges allow; without it, versions already locked are kept.
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet $(PIP_TOOLS); }
	$(COMPILE) $(LOCK_ARGS) --extra test --extra train --extra ray --extra serve -o $(LOCK) pyproject.toml
	$(COMPILE) $(LOCK_ARGS) -c $(LOCK) -o $(RUNTIME_LOCK) pyproject.toml
	$(COMPILE) $(LOCK_ARGS) -c $(LOCK) --extra serve -o $(SERVE_LOCK) pyproject.toml

# The suite against the newest releases pyproject.toml's ranges allow, in a venv of its own (.venv-latest), to see
# breakage before users do. Not part of CI: a new upstream release must not fail a submission. torch stays 2.13.0 CPU.
LATEST := .venv-latest
test-latest: prometheus
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet torch==2.13.0
	$(LATEST)/bin/pip install --quiet --upgrade --upgrade-strategy eager -e '.[test,train,ray,serve]'
	$(LATEST)/bin/pip freeze --exclude-editable > $(LATEST)/versions.txt
	@echo "newest versions: $(LATEST)/versions.txt (compare with $(LOCK))"
	$(LATEST)/bin/ruff check .
	RLSCALE_TEST_LATEST=1 $(LATEST)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) $(LATEST) $(LOCK_VENV) build *.egg-info
