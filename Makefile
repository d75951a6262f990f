# fediflow.dr — the README's commands. Set-up is part of every target (idempotent, fast
# when already done).
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.build/collections
export PATH := $(CURDIR)/$(BIN):$(PATH)
INVENTORY ?= inventories/lab/hosts.yml
# The physical backup and WAL engine for lab-up and drill: empty - the inventory's (native); `make drill ENGINE=pgbackrest`
ENGINE ?=
ENGINE_ARGS := $(if $(ENGINE),-e fediflow_backup_engine=$(ENGINE))
COLL_DIR := .build/collections/ansible_collections/fediflow/dr

.PHONY: setup test test-quick test-unit test-sanity test-lint test-molecule test-integration molecule-drill drill bench lab-up lab-down clean

setup:
	@bash scripts/setup.sh

test: setup
	@bash scripts/test.sh all

# The developers' inner loop (under 5 minutes): unit tests and the integration tests that neither
# move production nor are marked slow. CI runs the full `make test`.
test-quick: setup
	@bash scripts/test.sh quick

test-unit: setup
	@bash scripts/test.sh unit

test-sanity: setup
	@bash scripts/test.sh sanity

test-lint: setup
	@bash scripts/test.sh lint

test-molecule: setup
	@bash scripts/test.sh molecule

test-integration: setup
	@bash scripts/test.sh integration

# The full DR drill as a Molecule scenario (lab up checked for idempotence, backups and drill as the side effect, testinfra verify).
molecule-drill: setup
	@FEDIFLOW_LAB_INVENTORY=$${FEDIFLOW_LAB_INVENTORY:-$(abspath $(INVENTORY))} bash scripts/test.sh molecule-drill

lab-up: setup
	$(BIN)/ansible-playbook -i $(INVENTORY) lab/playbooks/lab_up.yml $(ENGINE_ARGS)

lab-down: setup
	$(BIN)/ansible-playbook -i $(INVENTORY) lab/playbooks/lab_down.yml

drill: setup
	$(BIN)/ansible-playbook -i $(INVENTORY) lab/playbooks/lab_up.yml $(ENGINE_ARGS)
	@echo "== the scheduled backup run (what cron/AWX does before a drill finds it) =="
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/backup.yml $(ENGINE_ARGS)
	@rm -f .build/drill-summary.txt
	@$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/dr_drill.yml $(ENGINE_ARGS) -e drill_summary_file=$(CURDIR)/.build/drill-summary.txt; \
	  status=$$?; \
	  if [ -f .build/drill-summary.txt ]; then printf '\n== DR drill: measured vs target ==\n'; cat .build/drill-summary.txt; fi; \
	  exit $$status

bench: setup
	@bash scripts/bench.sh

clean: lab-down
	rm -rf .build
