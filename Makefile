# Each target sets itself up: a virtual environment with the CPU build of torch, then this
# package installed editable with its test extras.
PYTHON ?= python3
# Where pip looks for torch. Empty here (the CPU wheel is found locally); on a machine without one,
# use TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" to avoid the CUDA build.
TORCH_PIP_ARGS ?=
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench bench-tasks reproduce reproduce-report clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m layerdrop.demo

# Two workers, one thread each: most tests start processes or run tiny models, which one core
# runs as fast as two, so the suite takes about half the time on a 2-core machine.
TEST_WORKERS ?= 2
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS)

bench: $(STAMP)
	$(PY) benchmarks/train_speed.py
	$(PY) benchmarks/nanogpt_quality.py
	$(PY) benchmarks/nanogpt_quality.py --amp bf16
	$(PY) benchmarks/ddp_speed.py
	$(PY) benchmarks/pruned_inference.py
	$(PY) benchmarks/step_profile.py
	$(PY) benchmarks/step_profile.py --amp bf16
	$(PY) benchmarks/step_profile.py --amp bf16 --attention-in-bf16
	@if $(PY) -c "import transformers" 2>/dev/null; then $(PY) benchmarks/hf_speed.py && $(PY) benchmarks/hf_speed.py --amp bf16; \
	else echo "hf_speed: skipped, transformers is not installed (pip install -e '.[bench]')"; fi
	@if [ -n "$(NANOGPT_DIR)" ]; then $(PY) benchmarks/nanogpt_speed.py --nanogpt "$(NANOGPT_DIR)"; \
	else echo "nanogpt_speed: skipped, set NANOGPT_DIR to a clone of https://github.com/karpathy/nanoGPT"; fi
	$(PY) benchmarks/table.py

# Long task studies on ../shared/data (about an hour each on 2 cores; see README).
bench-tasks: $(STAMP)
	$(PY) benchmarks/translation_depth.py
	$(PY) benchmarks/sst2_depth.py

# The paper's findings at CPU scale (docs/results/RESULTS.md); about 2 hours on 2 cores. Every
# experiment resumes where it stopped and can be run alone (README: "Reproducing the paper").
reproduce: $(STAMP)
	$(PY) reproduce/run_all.py

reproduce-report: $(STAMP)
	$(PY) reproduce/report.py

clean:
	rm -rf $(VENV) runs
