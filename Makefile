# Every target sets up .venv/ on first use; nothing else is needed on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench reports clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Runs the Singles' Day peak (10 M viewers, cohort engine, about a minute at most). Exit code 1
# means an SLO was missed: a result, not a failure of the demo.
demo: $(STAMP)
	$(BIN)/livesim run scenarios/singles-day-peak.toml --out reports/singles-day-peak; rc=$$?; [ $$rc -le 1 ]

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check sim relay tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks -q --benchmark-only --benchmark-columns=min,median,max,rounds

reports: $(STAMP)
	for f in scenarios/*.toml; do n=$$(basename $$f .toml); \
	  $(BIN)/livesim run $$f --out reports/$$n --quiet; rc=$$?; \
	  [ $$rc -le 1 ] || echo "skipped $$f (it needs an engine this version lacks)"; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .benchmarks
