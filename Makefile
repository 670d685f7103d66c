# Two commands do all the set-up on a fresh machine:
#   make demo   install nanoedge with its tools, export the default model, generate an image
#   make test   install, then run the default test suite (what CI runs)
PYTHON ?= python3
STAMP := .make-installed

.PHONY: install demo test test-slow clean

install: $(STAMP)

# torch is pinned (via the [export] extra) to the CPU build; a plain "torch" pulls CUDA.
$(STAMP): pyproject.toml
	$(PYTHON) -m pip install --upgrade-strategy only-if-needed -e ".[dev]"
	touch $(STAMP)

demo: install
	$(PYTHON) -m nanoedge export preset:tiny-random -o demo/tiny-random --overwrite
	$(PYTHON) -m nanoedge info demo/tiny-random
	$(PYTHON) -m nanoedge generate "a red circle on the left" -m demo/tiny-random -o demo/red-circle.png --seed 1

# pytest exits 5 when it collected no test: that must fail, not pass silently.
test: install
	$(PYTHON) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-slow: install
	$(PYTHON) -m pytest -q -m slow -s

clean:
	rm -rf demo $(STAMP) .pytest_cache
