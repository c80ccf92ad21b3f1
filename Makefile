# The two commands a newcomer types: `make test` and (later) `make demo`.
# Each installs what it needs into $(VENV) first.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines take this torch (a CPU wheel); a CUDA torch already importable
# by $(SYSTEM_PYTHON) is kept instead (the venv then sees system packages).
TORCH_CPU ?= torch==2.13.0
SYSTEM_PYTHON ?= python3
# What `make test` and `make demo` need: the test tools, the report's figures, the SLURM submitter
# (pyproject.toml; tensorboard and wandb are the other extras). The console scripts come with it.
EXTRAS ?= test,report,slurm
PYTEST_ARGS ?=
# make demo DEMO_ARGS="--tracks 64 --seconds 30 --epochs-scale 4 --device cuda" (python -m labelnoise.demo --help)
DEMO_ARGS ?=

.PHONY: install test demo clean-venv sounds

install: sounds $(VENV)/.installed

# The sampled render backend (python -m labelnoise.synth --render sampled) plays General MIDI SoundFonts
# through FluidSynth: Debian packages, installed here when missing and we are root with apt-get.
SOUND_PACKAGES ?= fluidsynth fluid-soundfont-gm timgm6mb-soundfont
SOUNDFONT_FILES ?= /usr/share/sounds/sf2/FluidR3_GM.sf2 /usr/share/sounds/sf2/TimGM6mb.sf2
sounds:
	@missing=0; for f in $(SOUNDFONT_FILES); do [ -f "$$f" ] || missing=1; done; \
	if command -v fluidsynth >/dev/null && [ $$missing -eq 0 ]; then exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then \
		echo "sounds: the sampled render backend needs fluidsynth and $(SOUNDFONT_FILES): install the packages $(SOUND_PACKAGES) (as root: apt-get install $(SOUND_PACKAGES))"; \
		exit 0; \
	fi; \
	echo "sounds: apt-get install $(SOUND_PACKAGES)"; \
	apt="apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends $(SOUND_PACKAGES)"; \
	log=$$(mktemp); \
	if ! DEBIAN_FRONTEND=noninteractive $$apt >$$log 2>&1; then \
		apt-get -o DPkg::Lock::Timeout=300 update >>$$log 2>&1; \
		DEBIAN_FRONTEND=noninteractive $$apt >>$$log 2>&1 || \
			{ tail -n 20 $$log; echo "sounds: apt-get install $(SOUND_PACKAGES) failed (log above)"; rm -f $$log; exit 1; }; \
	fi; \
	rm -f $$log

$(VENV)/.installed: pyproject.toml
	@if $(SYSTEM_PYTHON) -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then \
		echo "install: keeping the CUDA torch of $(SYSTEM_PYTHON)"; \
		$(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(SYSTEM_PYTHON) -m venv $(VENV); \
		$(PY) -m pip install -q "$(TORCH_CPU)"; \
	fi
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The whole method on synthetic data, about 9 minutes on 2 idle CPU cores; report in runs/demo/report.html.
demo: install
	$(PY) -m labelnoise.demo $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)

# The method's two parts (labelnoise/pipeline.py holds the stage order), here one stage after the
# other, or as chains of SLURM jobs (docs/CLUSTER.md). PIPELINE_ARGS go to each:
# make part1 PIPELINE_ARGS="--preset tiny --nproc 2"; make slurm-part1 PIPELINE_ARGS="--from step2".
PIPELINE_ARGS ?=
.PHONY: part1 part2 slurm-part1 slurm-part2 slurm-test

part1 part2: install
	$(PY) -m labelnoise.pipeline run $@ $(PIPELINE_ARGS)

slurm-part1 slurm-part2: install
	bash slurm/$(subst slurm-,,$@).sh $(PIPELINE_ARGS)

# The SLURM scripts on a one-node Slurm started for the tests (root; installs slurm-wlm with apt).
slurm-test: install
	$(PY) -m pytest tests/test_slurm.py $(PYTEST_ARGS)
