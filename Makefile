# bocker-engine: `make run` starts the daemon, `make test` runs the whole suite.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := btrfs-progs iptables iproute2 busybox-static tini docker-registry skopeo openssl procps kmod util-linux libseccomp2 systemd
SOCKET ?= /run/bocker.sock
DRIVER ?=

.PHONY: install apt venv run test lint unit integration bench clean request-types install-systemd wheel

install: apt venv

# Debian packages, installed only when one is missing (fast when all are there).
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y --no-install-recommends $$missing || { apt-get update && apt-get install -y --no-install-recommends $$missing; }; \
	fi

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Re-install only when the dependency list changed.
$(VENV)/.install-stamp: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(VENV)/.install-stamp

run: install
	$(BIN)/bockerd -H unix://$(SOCKET) $(if $(DRIVER),--storage-driver $(DRIVER))

# bockerd as a systemd service (contrib/systemd): socket-activated on /run/bocker.sock, Type=notify.
# Idempotent. Uses /usr/local/bin/bockerd (pip's console script), or links this checkout's.
SYSTEMD_DIR ?= /etc/systemd/system
install-systemd: install
	install -D -m 0644 contrib/systemd/bocker.service $(SYSTEMD_DIR)/bocker.service
	install -D -m 0644 contrib/systemd/bocker.socket $(SYSTEMD_DIR)/bocker.socket
	getent group docker >/dev/null || groupadd --system docker
	[ -e /usr/local/bin/bockerd ] || ln -s $(abspath $(BIN))/bockerd /usr/local/bin/bockerd
	install -d -m 0755 /etc/bocker
	if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed; start with: systemctl enable --now bocker.socket"

# A wheel in dist/ (`pip install dist/bocker_engine-*.whl` gives bockerd).
wheel: install
	$(BIN)/pip wheel --no-deps -w dist .

lint: install
	$(BIN)/ruff check bocker_engine tests compat_tests bench conftest.py
	$(BIN)/mypy bocker_engine tests compat_tests bench conftest.py

unit: install
	$(BIN)/pytest -q tests/unit

integration: install
	$(BIN)/pytest -q tests/integration compat_tests

test: install lint
	$(BIN)/pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache

# Regenerate the request body types (bocker_engine/api/request_types.json) from the swagger.
request-types: install
	$(BIN)/python -m tests.request_types
