# moonseg3r workspace commands (see README.md).
#   make setup   create/refresh .venv, install pinned deps + ROS 2, colcon-build the interfaces
#   make test    run the whole test suite (pytest over test/)
#   make demo    run the demo (moonseg3r demo) on the embedded default; DEMO_ARGS="..." adds options
SHELL := /bin/bash
.DEFAULT_GOAL := help

# DDS stays on this machine for everything run from here, on a domain id of our own.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
ROS_DOMAIN_ID ?= $(shell echo $$(( $$PPID % 90 + 10 )))
export ROS_DOMAIN_ID

PYTEST_ARGS ?= -q
DEMO_ARGS ?=
ENV := source scripts/env.sh &&

.PHONY: help setup test demo clean
help:
	@sed -n '2,5p' Makefile

setup:
	bash scripts/setup.sh

test:
	$(ENV) python -m pytest test $(PYTEST_ARGS)

demo:
	$(ENV) moonseg3r demo --out demo_out $(DEMO_ARGS)

clean:
	rm -rf build install log
