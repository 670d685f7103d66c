# Two commands do all the set-up on a fresh machine:
#   make demo   install nanoedge with its tools, export + quantize the demo model, generate images
#   make test   install, then lint, type-check and run the default test suite (what CI runs)
PYTHON ?= python3
STAMP := .make-installed

.PHONY: install browser demo lint typecheck test test-slow clean

install: $(STAMP) browser

# The playground's browser tests drive Debian's Chromium through its chromedriver (nothing
# downloads a browser at run time). Installed with apt-get only when missing; if that fails the
# tests fail and say how to install them. The CJK font renders the style labels (动漫...).
BROWSER_PACKAGES := chromium chromium-driver fonts-wqy-microhei
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; else \
		echo "installing $(BROWSER_PACKAGES) (the playground browser tests need them)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || command -v sudo ); \
		( $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $(BROWSER_PACKAGES) ) \
		|| echo "warning: could not install $(BROWSER_PACKAGES); the browser tests will fail until they are installed" >&2; \
	fi

# torch is pinned (via the [export] extra) to the CPU build; a plain "torch" pulls CUDA.
$(STAMP): pyproject.toml
	$(PYTHON) -m pip install --upgrade-strategy only-if-needed -e ".[dev]"
	touch $(STAMP)

# The main job on the built-in demo model: export its checkpoint, quantize it under the default
# quality gate (the report is printed), generate from the INT8 package, and from the shipped default with no -m.
demo: install
	$(PYTHON) -m nanoedge export models/demo-checkpoint -o demo/pkg --output-sizes 512x512,768x768,1024x1024 --default-steps 20 --default-guidance 5 --overwrite
	$(PYTHON) -m nanoedge quantize demo/pkg -o demo/pkg-int8 --scheme int8 --prompts models/demo-calibration-prompts.txt --overwrite
	$(PYTHON) -m nanoedge generate "a red circle on the left" -m demo/pkg-int8 --size 512x512 -o demo/red-circle.png --seed 1
	$(PYTHON) -m nanoedge generate "a blue square at the top" -o demo/blue-square.png --seed 1

# ruff on all code (pyflakes, pycodestyle, import order; settings in pyproject.toml).
lint: install
	$(PYTHON) -m ruff check .

# mypy on the base layer, the lean runtime and targets. The source folders map to nanoedge.*
# through package-dir, which mypy cannot follow, so it reads them through a tree of links.
typecheck: install
	rm -rf .mypy-tree && mkdir -p .mypy-tree/nanoedge
	cp nanoedge/__init__.py .mypy-tree/nanoedge/__init__.py
	ln -s ../../nanoedge/core .mypy-tree/nanoedge/core
	ln -s ../../runtime .mypy-tree/nanoedge/runtime
	ln -s ../../targets .mypy-tree/nanoedge/targets
	cd .mypy-tree && $(PYTHON) -m mypy --config-file ../pyproject.toml --cache-dir ../.mypy_cache -p nanoedge.core -p nanoedge.runtime -p nanoedge.targets

# Lint and type checks first, so CI (.ci/run -> make test) keeps them.
# pytest exits 5 when it collected no test: that must fail, not pass silently. The first line
# names the CPU (vendor, model, ISA): results differ by CPU, and skips name what the CPU lacks
# (-ra lists every skip with its reason at the end).
test: install lint typecheck
	@$(PYTHON) -c "from nanoedge.targets.cpuinfo import main; main()"
	$(PYTHON) -m pytest -q -ra; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-slow: install
	$(PYTHON) -m pytest -q -m slow -s

clean:
	rm -rf demo $(STAMP) .pytest_cache .mypy-tree .mypy_cache .ruff_cache
