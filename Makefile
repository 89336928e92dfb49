# MSTT-STVSR: two commands on a fresh Debian 12 machine (root): `make demo`, `make test`.
SHELL := /bin/bash
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
# xvfb + xauth: tests/test_qgis_desktop.py runs the QGIS desktop on a virtual display (xvfb-run)
APT_PKGS := qgis python3-qgis qgis-providers python3-rasterio python3-gdal gdal-bin python3-opencv python3-pil python3-tqdm \
            xvfb xauth
PIP_PKGS := torch==2.13.0 safetensors tqdm pytest dask==2024.12.1 distributed==2024.12.1
STAMP   := $(VENV)/.setup-stamp
PLUGIN_LINK := build/plugins/mstt_stvsr
JOBS ?= 2

.PHONY: setup apt venv test test-fast test-allocator demo package bench clean imagery data train eval eval-candidate heldout-v2 eval-v2 eval-real eval-real-candidate

setup: $(STAMP)

# Everything setup needs, once; re-runs only when the recipe inputs change.
$(STAMP): Makefile pyproject.toml tools/qgis_process.sh
	@dpkg -s $(APT_PKGS) >/dev/null 2>&1 || { \
	  echo "== apt: installing QGIS, GDAL, rasterio, OpenCV, Xvfb"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PKGS) >/dev/null; }
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@echo "numpy<2" > $(VENV)/constraints.txt
	@$(PY) -c "import torch, safetensors, tqdm, pytest, dask, distributed; assert torch.__version__.startswith('2.13.0'); assert dask.__version__ == distributed.__version__ == '2024.12.1'" 2>/dev/null || { \
	  echo "== pip: torch 2.13.0 (CPU), safetensors, dask + distributed 2024.12.1"; \
	  PIP_DISABLE_PIP_VERSION_CHECK=1 $(PIP) install -q -c $(VENV)/constraints.txt $(PIP_PKGS) 2>&1 | grep -v "is ignored" || true; }
	@PIP_DISABLE_PIP_VERSION_CHECK=1 $(PIP) install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored" || true
	@mkdir -p build/plugins && ln -sfn "$(CURDIR)" $(PLUGIN_LINK)
	@install -m 755 tools/qgis_process.sh $(VENV)/bin/qgis_process
	@$(PY) -c "import numpy; assert numpy.__version__ < '2', numpy.__version__; import mstt_stvsr.core, rasterio, cv2, torch"
	@touch $(STAMP)
	@echo "== setup done: $(VENV)/bin/mstt-stvsr, $(VENV)/bin/qgis_process"

test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider -m "not allocator" tests

test-fast: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider -m "not slow and not allocator" tests

# A real allocation failure under a capped address space: depends on the allocator and the CPU.
test-allocator: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider -m allocator tests

demo: setup
	@$(PY) tools/demo.py $(DEMO_ARGS)

package:
	@/usr/bin/python3 tools/package.py

# CPU machines: the quick mode (minutes). On a GPU: make bench BENCH_ARGS= (full sizes).
BENCH_ARGS ?= $(shell $(PY) -c "import torch; print('' if torch.cuda.is_available() else '--quick')" 2>/dev/null || echo --quick)
bench: setup
	$(VENV)/bin/mstt-stvsr bench $(BENCH_ARGS)

# Real aerial stills for synthetic training video (deepforest wheel + Debian opencv-doc), cached.
imagery: setup
	$(PY) tools/fetch_imagery.py

# Synthetic satellite video from those stills (core/training/clips.py), deterministic from the seeds:
# training set 256 clips calibrated to real Jilin-1 video (mostly stabilised, per-frame noise and
# JPEG, ~1 m GSD; optics blur sigma 0.6-1.2 HR px, the sharpness of real frames), made by today's
# synthesis.
, := ,
SYNTH := $(VENV)/bin/mstt-stvsr synth --quiet
TRAIN_DATA := build/data/train_city
data: $(TRAIN_DATA)/clips.json build/data/test/clips.json build/data/test_soft/clips.json
$(TRAIN_DATA)/clips.json: | imagery
	$(SYNTH) --out $(TRAIN_DATA) --clips 256 --size 384 --split train --seed 11 --psf 0.6$(,)1.2

# Held-out sets are frozen: made by the synthesis code of one fixed commit (git archive), so later
# changes to the synthesis never change them, and checked against their SHA-256 sums
# (configs/heldout_*.sha256). v1 (README's continuity): 12 clips of 7 x 320 x 320 HR, sharp
# (blur sigma 0-0.6) and soft (0.6-1.3). v2: 4 long urban clips (19 HR frames of 1024 x 1024,
# 10 LR inputs of 256 x 256), soft optics as Jilin-1's.
HELDOUT_COMMIT = 0d5f24d624260bb38ba5137c1c465f456a18c69b
# $(call frozen,folder,checksums,synth arguments)
define frozen
	rm -rf build/heldout_gen $(1).part && mkdir -p build/heldout_gen/mstt_stvsr
	git archive $(HELDOUT_COMMIT) | tar -x -C build/heldout_gen/mstt_stvsr
	PYTHONPATH=build/heldout_gen $(VENV)/bin/python -m mstt_stvsr.core synth --quiet --imagery build/imagery \
	  --out $(1).part --split test $(3)
	cd $(1).part && sha256sum -c --quiet $(CURDIR)/configs/$(2) || \
	  { echo "$(1) does not match configs/$(2): not comparable with README's numbers" >&2; exit 1; }
	mv $(1).part $(1) && rm -rf build/heldout_gen
endef
build/data/test/clips.json: | imagery
	$(call frozen,build/data/test,heldout_v1_sharp.sha256,--clips 12 --size 320 --seed 2)
build/data/test_soft/clips.json: | imagery
	$(call frozen,build/data/test_soft,heldout_v1_soft.sha256,--clips 12 --size 320 --seed 2 --psf 0.6$(,)1.3)
heldout-v2: build/data/heldout_v2/clips.json
build/data/heldout_v2/clips.json: | imagery
	$(call frozen,build/data/heldout_v2,heldout_v2.sha256,--clips 4 --size 1024 --frames 19 --seed 5 --psf 0.6$(,)1.3 --urban 1)
eval-v2: heldout-v2
	$(VENV)/bin/mstt-stvsr eval --data build/data/heldout_v2 --out build/eval/heldout_v2 --tile 256 --precision auto

# Real video decides which weights ship: ../shared/realvideo/viso012 (real Jilin-1 frames, validation
# only: never trained on, never copied here). Its 8 clips whole (in memory, fp32, with the multi-frame
# gain), then long_300 (19 frames) through the pipeline: window plans, and tiles against one
# whole-frame tile. WEIGHTS= scores another file (make eval-real-candidate: the training candidate).
REAL ?= ../shared/realvideo/viso012
WEIGHTS ?=
REAL_OUT ?= build/eval/real
EVAL := $(VENV)/bin/mstt-stvsr eval --quiet $(if $(WEIGHTS),--weights $(WEIGHTS))
eval-real: setup
	$(EVAL) --data $(REAL)/clip_* --out $(REAL_OUT)/clips --multiframe
	$(VENV)/bin/python tools/real_tiles.py --data $(REAL) --out $(REAL_OUT) $(if $(WEIGHTS),--weights $(WEIGHTS))
eval-real-candidate:
	$(MAKE) eval-real WEIGHTS=$(CANDIDATE) REAL_OUT=build/eval/real_candidate

# Continue training the shipped weights (time-boxed cosine schedule; TRAIN_ARGS=--resume continues
# the run's checkpoint instead of starting again from the shipped weights). The result is a
# candidate: `make eval-candidate` scores it beside the shipped weights, and it replaces
# resources/weights/mstt_default.safetensors only by hand, when it is better on both held-out sets.
TRAIN_MINUTES ?= 120
TRAIN_ARGS ?=
CANDIDATE ?= build/train/candidate.safetensors
train: $(TRAIN_DATA)/clips.json
	$(VENV)/bin/mstt-stvsr train --config configs/default.toml --schedule time --max-minutes $(TRAIN_MINUTES) \
	  --init resources/weights/mstt_default.safetensors $(TRAIN_ARGS) --export $(CANDIDATE)
eval: data
	$(VENV)/bin/mstt-stvsr eval --data build/data/test --out build/eval/test --multiframe
	$(VENV)/bin/mstt-stvsr eval --data build/data/test_soft --out build/eval/test_soft --multiframe
eval-candidate: data
	$(VENV)/bin/mstt-stvsr eval --data build/data/test --weights $(CANDIDATE) --out build/eval/candidate_test --multiframe
	$(VENV)/bin/mstt-stvsr eval --data build/data/test_soft --weights $(CANDIDATE) --out build/eval/candidate_test_soft --multiframe

clean:
	rm -rf build dist demo_out $(STAMP)
