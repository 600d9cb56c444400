# Every target sets up .venv/ on first use; nothing else is needed on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench reports validation clean test-tools bench-tools

# System programs the relay tests and benchmarks drive, as command:package pairs. Missing ones
# are installed with apt-get (one `apt-get update` first).
TEST_TOOLS := ffmpeg:ffmpeg ffprobe:ffmpeg redis-server:redis-server
BENCH_TOOLS := $(TEST_TOOLS) nginx:nginx wrk:wrk redis-benchmark:redis-tools
define install_missing
	@missing=""; for pair in $(1); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
endef

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Runs the Singles' Day peak (10 M viewers, cohort engine, about a minute at most). Exit code 1
# means an SLO was missed: a result, not a failure of the demo.
demo: $(STAMP)
	$(BIN)/livesim run scenarios/singles-day-peak.toml --out reports/singles-day-peak; rc=$$?; [ $$rc -le 1 ]

test-tools:
	$(call install_missing,$(TEST_TOOLS))

bench-tools:
	$(call install_missing,$(BENCH_TOOLS))

test: $(STAMP) test-tools
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check sim relay tests benchmarks
	$(BIN)/mypy

bench: $(STAMP) bench-tools
	$(BIN)/python -m pytest benchmarks -q --benchmark-only --benchmark-columns=min,median,max,rounds

reports: $(STAMP)
	for f in scenarios/*.toml; do n=$$(basename $$f .toml); \
	  $(BIN)/livesim run $$f --out reports/$$n --quiet; rc=$$?; \
	  [ $$rc -le 1 ] || echo "skipped $$f (it needs an engine this version lacks)"; done

# The model against the real relay on every scenario docs/validation.md records (in real time:
# about 20 minutes). Exit code 1: a metric outside the tolerance.
VALIDATED := quickstart flash-sale-backends edge-failure push-flv hls-classic
validation: $(STAMP) test-tools
	mkdir -p reports/validation
	$(BIN)/livesim calibrate --out reports/validation/calibration.toml
	for n in $(VALIDATED); do \
	  $(BIN)/livesim bench scenarios/$$n.toml --compare --quiet \
	    --calibration reports/validation/calibration.toml --out reports/validation/$$n || exit $$?; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .benchmarks
