# citynode: two commands on a fresh machine — `make demo` and `make test`.
# Both create the virtual environment and install what they need (mosquitto
# from Debian's packages when run as root).

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
PYTEST  := $(BIN)/python -m pytest

.PHONY: all venv deps-system deps-nats demo test test-system test-nspawn test-faults test-onem2m test-platforms test-cluster soak sparkplug-host-venv asyncapi eval eval-inactivity eval-models train docs lint bench clean help

all: test

help:
	@echo "make demo         run a whole node on emulated sensors and a local mosquitto (Ctrl-C stops)"
	@echo "make test         unit, emulator and end-to-end tests (what CI runs first)"
	@echo "make test-system  tests against a real private journald (root)"
	@echo "make test-nspawn  the installed unit and over-the-air updates under a real systemd (root)"
	@echo "make test-faults  broker outage, SIGKILLs during a drain, a full disk (minutes)"
	@echo "make test-onem2m  the oneM2M format against a real KETI Mobius (../shared/vendor)"
	@echo "make test-platforms  the platform formats (Home Assistant...) against real brokers"
	@echo "make test-cluster broker failover against a real three-node NATS cluster (MQTT)"
	@echo "make soak         100 real agents against the cluster for 10 minutes, rolling restart"
	@echo "make asyncapi     docs/asyncapi.yaml validated by the AsyncAPI CLI (npm registry)"
	@echo "make lint         ruff"
	@echo "make bench        payload size, spool, models (size, latency, memory) and other figures"
	@echo "make train        retrain the fall model (TensorFlow, own venv)"
	@echo "make eval-models  the fall model on held-out subjects (build/eval/)"
	@echo "make eval         detector evaluations (parking, bins, inactivity, falls, fire, counting)"
	@echo "make clean        remove the virtual environment and caches"

$(STAMP): setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench,tflite]'
	# The Sparkplug B schema for the payload bench; its own pins (paho 1.x) are not wanted.
	$(BIN)/pip install -q --no-deps 'mqtt-spb-wrapper>=2,<3'
	touch $@

venv: $(STAMP)

deps-system:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing mosquitto (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			mosquitto mosquitto-clients >/dev/null; \
	else \
		echo "mosquitto is not installed and this is not root: sudo apt-get install mosquitto"; \
		echo "(tests that need a broker will be skipped)"; \
	fi

demo: venv deps-system
	$(BIN)/citynode simulate

test: venv deps-system
	$(PYTEST) -q -m "not system and not faults and not nspawn and not arm64 and not asyncapi and not homeassistant and not sparkplug and not onem2m and not cluster"

test-system: venv deps-system
	@if [ ! -x /lib/systemd/systemd-journald ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; fi
	$(PYTEST) -q -m system

# The installed unit under a real systemd in systemd-nspawn, and whole over-the-air updates
# there (tests/test_nspawn_update.py: good, crashing, hung and mute releases rolled back,
# kills during download and switch, tampered and older bundles; figures in
# build/nspawn-update-figures.json). Root; about 6 minutes, the first run also builds a
# cached Debian bookworm root with debootstrap.
test-nspawn: venv
	@if [ "$$(id -u)" = 0 ] && ! command -v systemd-nspawn >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			systemd-container debootstrap >/dev/null; fi
	$(PYTEST) -q -m nspawn

# Broker down for minutes, 50 SIGKILLs during a drain, a full disk (about 4 minutes).
test-faults: venv deps-system
	$(PYTEST) -q -m faults

# The oneM2M format against a real KETI Mobius started by ../shared/vendor/mobius-fixture.sh
# with MariaDB and mosquitto (Debian packages, installed when root) and Node.js (its
# node_modules come from the npm registry once, cached in ~/.cache/mobius-fixture):
# registration, contentInstances, commands, resets, restarts (tests/onem2m, about 3 minutes).
test-onem2m: venv deps-system
	@missing=""; for t in mariadbd mosquitto node npm; do \
		command -v $$t >/dev/null 2>&1 || [ -x /usr/sbin/$$t ] || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing mariadb-server, mosquitto, nodejs, npm (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			mariadb-server mosquitto nodejs npm >/dev/null; \
	elif [ -n "$$missing" ]; then \
		echo "missing:$$missing (sudo apt-get install mariadb-server mosquitto nodejs npm);"; \
		echo "the onem2m tests will say why and skip"; fi
	$(PYTEST) -q -m onem2m

# The platform formats against real brokers and daemons: Home Assistant discovery (tests/
# homeassistant: retained configurations, removal, announcing again; about 10 s); Sparkplug B
# judged by a pysparkplug host application in its own venv (tests/sparkplug: births, seq,
# rebirth, commands, primary host, the NDEATH of a killed node; about 40 s).
test-platforms: venv deps-system sparkplug-host-venv
	$(PYTEST) -q -m "homeassistant or sparkplug"

# Broker failover against a real three-node NATS cluster with MQTT on 127.0.0.1 (nats-server
# from Debian, installed when root): the node's broker stopped, the command back to the
# primary, a rolling restart under load with nothing lost (tests/cluster, about 2 minutes).
deps-nats:
	@if ! command -v nats-server >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		command -v apt-get >/dev/null 2>&1; then \
		echo "installing nats-server (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			nats-server >/dev/null; \
	elif ! command -v nats-server >/dev/null 2>&1; then \
		echo "nats-server is not installed (sudo apt-get install nats-server): the cluster"; \
		echo "tests will say so and skip"; fi

test-cluster: venv deps-nats
	$(PYTEST) -q -s -m cluster tests/cluster

# The fleet soak: 100 real agents (emulated sensors, one state directory each) against
# the NATS cluster for 10 minutes with a rolling restart; prints loss, duplicates, CPU and
# memory per node, the brokers' load, and the capacity estimate (docs/ops.md; ~12 minutes).
soak: venv deps-nats
	$(BIN)/python -m bench.fleet_soak

# pysparkplug (the independent Sparkplug host in tests/sparkplug) pins paho-mqtt<2: its own venv.
SPARKPLUG_VENV := .venv-sparkplug
$(SPARKPLUG_VENV)/.stamp: tests/sparkplug/host_venv.py
	$(PY) tests/sparkplug/host_venv.py $(SPARKPLUG_VENV) || \
		echo "no Sparkplug host environment: the sparkplug tests will say why and skip"

sparkplug-host-venv: $(SPARKPLUG_VENV)/.stamp

# docs/asyncapi.yaml against the AsyncAPI project's own CLI (@asyncapi/cli from the npm
# registry, cached in build/asyncapi-cli; Node.js and npm from Debian when root and
# missing): it validates, broken documents do not, the YAML reads back as the JSON, and
# every example fits its schema (tests/test_asyncapi.py -m asyncapi, about 40 s). The
# tests run the CLI with analytics and its update check off (ASYNCAPI_METRICS_CONFIG_PATH,
# ASYNCAPI_SKIP_NEW_VERSION_CHECK); it then opens no connection. Install scripts are not
# run (--ignore-scripts: shell completion and install analytics).
ASYNCAPI_CLI   := build/asyncapi-cli
ASYNCAPI_PKGS  := @asyncapi/cli@4.1.1 ajv@8 js-yaml@4
ASYNCAPI_STAMP := $(ASYNCAPI_CLI)/.installed-cli-4.1.1

$(ASYNCAPI_STAMP):
	@if ! command -v npm >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Node.js and npm (Debian packages)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				nodejs npm >/dev/null; \
		else echo "npm is not installed: sudo apt-get install nodejs npm"; exit 1; fi; fi
	mkdir -p $(ASYNCAPI_CLI)
	cd $(ASYNCAPI_CLI) && SCARF_ANALYTICS=false npm install --prefix . --no-audit --no-fund \
		--ignore-scripts --loglevel=error $(ASYNCAPI_PKGS)
	touch $@

asyncapi: venv $(ASYNCAPI_STAMP)
	CITYNODE_ASYNCAPI_REQUIRED=1 $(PYTEST) -q -m asyncapi tests/test_asyncapi.py

# Detector evaluations with known truth (parking: 8 bays x 24 h; bins; the inactivity
# alarm on 40 households built from the tracebase traces; falls on held-out subjects; fire
# on real fires and 20 nuisance days, event level, about 25 s; people counting on 14
# scripted hours of street scenes, about 35 s). CI runs it.
eval: venv
	$(BIN)/python -m bench.eval_parking
	$(BIN)/python -m bench.eval_inactivity
	$(BIN)/python -m bench.eval_fall --guard
	$(BIN)/python -m bench.eval_fire
	$(BIN)/python -m bench.eval_counting

# The inactivity alarm alone, then on households with no routine (stress figure, no target).
eval-inactivity: venv
	$(BIN)/python -m bench.eval_inactivity
	$(BIN)/python -m bench.eval_inactivity --irregular

# Rebuild docs/payload.md and docs/commands.md from templates and the real codec.
docs: venv
	$(BIN)/python docs/tools/payload_gen.py >/dev/null
	$(BIN)/python docs/tools/payload_fill.py
	$(BIN)/python docs/tools/commands_gen.py >/dev/null

lint: venv
	$(BIN)/ruff check .

# tflite-runtime (the fallback runtime) needs numpy < 2: its own venv, for the latency figures.
TFLITE_VENV := .venv-tflite
$(TFLITE_VENV)/.stamp:
	$(PY) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/pip install -q 'tflite-runtime==2.14.0' 'numpy<2' || \
		echo "tflite-runtime is not available for this Python/platform: its figures are skipped"
	touch $@

bench: venv $(TFLITE_VENV)/.stamp
	$(BIN)/python -m bench

# Retrain the fall model (TensorFlow in its own venv; a few minutes on 2 cores). Fire
# detection runs on rules and has no model (docs/fire.md).
TRAIN_VENV := .venv-train
$(TRAIN_VENV)/.stamp: setup.cfg
	$(PY) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/pip install -q --upgrade pip
	$(TRAIN_VENV)/bin/pip install -q -e '.[train]'
	touch $@

train: $(TRAIN_VENV)/.stamp
	$(TRAIN_VENV)/bin/python -m training.fall.nested

# The fall model on held-out subjects (reports in build/eval/). The fire detector's
# evaluation is part of `make eval`.
eval-models: venv
	$(BIN)/python -m bench.eval_fall

# -- installation: offline bundle, SD-card kit, the arm64 proof (docs/install.md) --------------
# make bundle [ARCH=aarch64|x86_64] [EXTRAS=tflite (default; EXTRAS= for none)]   -> dist/citynode-bundle-<version>-<arch>.tar.gz
#      [SIGNING_KEY=fleet.key] [MIN_VERSION=V] [DOWNGRADE=1] [KIND=models [MODELS_VERSION=V]]
#      signed for updates over the air (docs/updates.md); KIND=models: the models alone
# make sdcard-kit OUT=/media/$$USER/bootfs CONFIG=node.toml [BUNDLE=...] [CREDENTIALS=mqtt.toml]
#      [CERT=node.crt KEY=node.key] [CA=ca.crt] [HMAC_KEY=command.key] [NODE_HOSTNAME=pole-42]
# make test-arm64   Debian bookworm arm64 chroot under QEMU (root; first run ~5 min, cached)
ARCH    ?= aarch64
EXTRAS  ?= tflite
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' agent/__init__.py)
KIT_BUNDLE = $(or $(BUNDLE),dist/citynode-bundle-$(VERSION)-aarch64.tar.gz)

.PHONY: bundle sdcard-kit test-arm64

bundle: venv
	$(BIN)/python deploy/bundle.py --arch "$(ARCH)" --extras "$(EXTRAS)" --out dist \
		$(if $(SIGNING_KEY),--signing-key "$(SIGNING_KEY)") $(if $(KIND),--kind "$(KIND)") \
		$(if $(MIN_VERSION),--min-version "$(MIN_VERSION)") $(if $(DOWNGRADE),--downgrade) \
		$(if $(MODELS_VERSION),--version "$(MODELS_VERSION)")

sdcard-kit: venv
	@if [ -z "$(OUT)" ] || [ -z "$(CONFIG)" ]; then \
		echo "usage: make sdcard-kit OUT=/media/\$$USER/bootfs CONFIG=node.toml [BUNDLE=file.tar.gz]"; \
		echo "       [CREDENTIALS=mqtt.toml] [CERT=node.crt KEY=node.key] [CA=ca.crt]"; \
		echo "       [HMAC_KEY=command.key] [NODE_HOSTNAME=name] [FORCE=1]   (docs/install.md)"; \
		exit 64; fi
	@if [ -z "$(BUNDLE)" ] && [ ! -f "$(KIT_BUNDLE)" ]; then $(MAKE) bundle ARCH=aarch64; fi
	$(BIN)/citynode sdcard-kit --out "$(OUT)" --config "$(CONFIG)" --bundle "$(KIT_BUNDLE)" \
		$(if $(CREDENTIALS),--credentials "$(CREDENTIALS)") $(if $(CERT),--cert "$(CERT)") \
		$(if $(KEY),--key "$(KEY)") $(if $(CA),--ca "$(CA)") $(if $(HMAC_KEY),--hmac-key "$(HMAC_KEY)") \
		$(if $(NODE_HOSTNAME),--hostname "$(NODE_HOSTNAME)") $(if $(FORCE),--force)

test-arm64: venv deps-system
	@if [ "$$(id -u)" = 0 ] && ! command -v qemu-aarch64-static >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			qemu-user-static binfmt-support debootstrap >/dev/null; fi
	$(PYTEST) -q -m arm64 --timeout 1200

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
