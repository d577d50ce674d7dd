# The two commands a newcomer needs (see README): `make demo` and `make test`.
.PHONY: deps demo test lint typecheck unit integration e2e down

deps:
	@hack/install-deps.sh

demo: deps
	@hack/demo.sh

# Everything CI runs: lint, type check, then every test tier (unit, integration, e2e).
test: deps lint typecheck
	.venv/bin/pytest

lint:
	.venv/bin/ruff check src tests bench

typecheck:
	.venv/bin/mypy

unit integration e2e: deps
	.venv/bin/pytest -m $@

down:
	.venv/bin/portico dev down
