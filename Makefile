# Lejek: the commands the README names.
#   make run    install, migrate, load demo data on first start, serve app + worker
#   make test   install (Python and Debian packages), run the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
INSTALLED := $(VENV)/.installed

.PHONY: install run serve test test-fast lint format migrate seed bench clean assets

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { \
	  echo "python3 -m venv failed: installing python3-venv"; \
	  apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }

# Exact versions from uv.lock, installed into .venv.
$(INSTALLED): pyproject.toml uv.lock | $(BIN)/python
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv sync --frozen --quiet
	touch $@

install: $(INSTALLED)

migrate: install
	$(BIN)/python manage.py migrate --noinput

# Local development: SQLite and the embedded broker unless DATABASE_URL / REDIS_URL say
# otherwise. Demo data is loaded once, on the first start.
run: install
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py migrate --noinput
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py seed_demo --if-empty
	DEBUG=$${DEBUG:-true} PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile.dev

# Production: gunicorn (static files through whitenoise), a Celery worker and Celery
# beat (Procfile) against DATABASE_URL and REDIS_URL, DEBUG off unless set. Needs
# SECRET_KEY and ALLOWED_HOSTS; see docs/production.md.
serve: install
	@test -n "$$DATABASE_URL" -a -n "$$REDIS_URL" || { \
	  echo "make serve: set DATABASE_URL and REDIS_URL (see docs/production.md)" >&2; exit 2; }
	DEBUG=$${DEBUG:-false} $(BIN)/python manage.py migrate --noinput
	DEBUG=$${DEBUG:-false} $(BIN)/python manage.py createcachetable
	DEBUG=$${DEBUG:-false} $(BIN)/python manage.py collectstatic --noinput -v 0
	DEBUG=$${DEBUG:-false} PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile

# Demo data (idempotent): see `python manage.py seed_demo --help` for --deals/--seed.
seed: migrate
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py seed_demo --if-empty

test: install
	bash scripts/install-system-deps.sh
	$(BIN)/python scripts/run_tests.py $(PYTEST_ARGS)

# The SQLite run only, no throw-away servers: the quick loop while coding.
test-fast: install
	$(BIN)/python -m pytest -m "not postgres and not redis and not browser" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=true $(BIN)/python manage.py makemigrations --check --dry-run

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var .pytest_cache

# KPI engine figures on a throw-away PostgreSQL (BENCH_DEALS=1000000 for the big run).
bench: install
	bash scripts/install-system-deps.sh
	$(BIN)/python scripts/bench.py

# Front-end assets: from the npm registry (package.json / package-lock.json) into
# static/vendor, where they are committed; the app never loads anything from a CDN.
assets:
	npm ci --no-audit --no-fund
	mkdir -p static/vendor/bootstrap static/vendor/chartjs
	cp node_modules/bootstrap/dist/css/bootstrap.min.css node_modules/bootstrap/dist/js/bootstrap.bundle.min.js node_modules/bootstrap/LICENSE static/vendor/bootstrap/
	cp node_modules/chart.js/dist/chart.umd.min.js node_modules/chart.js/LICENSE.md static/vendor/chartjs/
	sed -i 's#sourceMappingURL=.*\.map##' static/vendor/bootstrap/*.js static/vendor/bootstrap/*.css static/vendor/chartjs/*.js

# Load test of the production process set on a throw-away PostgreSQL with demo data
# (scripts/loadtest.py): LOADTEST_DEALS (default 100000), LOADTEST_SECONDS (default 60).
.PHONY: loadtest
loadtest: install
	bash scripts/install-system-deps.sh
	$(BIN)/python scripts/loadtest.py
