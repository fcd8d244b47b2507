# The two commands of the README. Both set up .venv first (idempotent, see scripts/setup.sh).
.PHONY: setup demo test clean

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/with_env.sh mr-mllm demo --out output/demo

test: setup
	bash scripts/with_env.sh python -m pytest

clean:
	rm -rf build output .pytest_cache
