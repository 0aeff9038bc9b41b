# moonseg3r workspace commands (see README.md).
#   make setup   create/refresh .venv, install pinned deps + ROS 2, colcon-build the interfaces
#   make test    lint (ruff check, mypy on core/), then the whole test suite (pytest over test/)
#   make lint    only ruff check + mypy (settings in pyproject.toml)
#   make demo    run the demo (moonseg3r demo) on the embedded default; DEMO_ARGS="..." adds options
SHELL := /bin/bash
.DEFAULT_GOAL := help

# DDS stays on this machine for everything run from here, on a domain id of our own: the rule of
# moonseg3r_ros/ros/dds.py (10 + pid % 90, here make's pid; test/ros/test_dds.py checks it is the same).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
ROS_DOMAIN_ID ?= $(shell echo $$(( $$PPID % 90 + 10 )))
export ROS_DOMAIN_ID

PYTEST_ARGS ?= -q
DEMO_ARGS ?=
ENV := source scripts/env.sh &&

.PHONY: help setup lint test demo clean dds-env
help:
	@sed -n '2,5p' Makefile

setup:
	bash scripts/setup.sh

lint:
	$(ENV) ruff check . && mypy

test: lint
	$(ENV) python -m pytest test $(PYTEST_ARGS)

# The DDS settings that make passes to what it runs (read by test/test_workspace.py).
dds-env:
	@env | grep -E '^(ROS_AUTOMATIC_DISCOVERY_RANGE|ROS_DOMAIN_ID|ROS_STATIC_PEERS)=' | sort

demo:
	$(ENV) moonseg3r demo --out demo_out $(DEMO_ARGS)

clean:
	rm -rf build install log
