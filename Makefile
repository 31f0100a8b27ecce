# `make demo` and `make test` work on a fresh machine: both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build on this machine's disk; GPU users pass their own, e.g. make TORCH=torch test.
TORCH ?= torch==2.13.0

.PHONY: install demo test test-slow lint bench bench-gpu clean default-soup fast-int8 default-int8 loeo-fold

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[ray]"
	# moto (the tests' S3 server) needs boto3: the boto3 matching the botocore that s3fs settled on spares pip
	# a backtrack through every newer boto3 release (minutes).
	$(BIN)/python -m pip install -q "boto3==$$($(BIN)/python -c 'import botocore; print(botocore.__version__)')"
	$(BIN)/python -m pip install -q -e ".[ray,test]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/copick-soup demo --out demo_out

test: install lint
	$(BIN)/python -m pytest -q -m "not slow"

# The slow tier: end-to-end runs on a real Ray head (`ray job submit`, a tune over the cluster), about 2 minutes
# more on 2 cores. .ci/run runs it after `make test`.
test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# Every table in benchmarks/results/, rewritten on this machine's CPU (benchmarks/README.md: which script writes which
# file and the claim it backs). About 7 hours on 2 cores, 4 of them the medium and large TTA 8 pick runs (last, so a
# run cut short keeps the rest); a table's header names the CPU it ran on.
PICK_FULL = $(BIN)/python benchmarks/pick.py --grid-shape full --cases grid --amp auto
bench: install
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/simulate.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/finetune.py
	$(BIN)/python benchmarks/finetune.py --shape 64,128,128 --crowding 6 --held-out 2 --steps 30 --layers all decoder head \
		--results finetune-layers.md
	$(BIN)/python benchmarks/soup.py
	$(BIN)/python benchmarks/generalization.py --in-engine --members
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/accuracy.py --window auto --runtime torch openvino --results accuracy-runtime.md
	$(BIN)/python benchmarks/runtimes.py
	$(BIN)/python benchmarks/thp.py
	$(BIN)/python benchmarks/tiling.py
	$(BIN)/python benchmarks/pick_memory.py
	$(BIN)/python benchmarks/precision.py
	$(BIN)/python benchmarks/voxel_sizes.py
	$(BIN)/python benchmarks/ray_scaling.py
	$(PICK_FULL) --tta 1 --repeat 2 --out pick-full-tta1-auto.md
	$(PICK_FULL) --tta 1 --variants unet3d_tiny --batch 1 4 --repeat 2 --out pick-batch.md
	$(PICK_FULL) --tta 1 --variants none --batch 1 4 --repeat 3 --out pick-engine.md
	$(BIN)/python benchmarks/pick.py --cases calls --runtime torch --amp auto
	$(PICK_FULL) --tta 8 --variants unet3d_tiny --out pick-full-tta8-auto-tiny.md
	$(PICK_FULL) --tta 8 --variants unet3d_medium --out pick-full-tta8-auto-medium.md
	$(PICK_FULL) --tta 8 --variants unet3d_large --out pick-full-tta8-auto-large.md

# The checks that need a GPU, in one go: the CUDA tests, the full-size pick grid against MONAI (pick-grid-gpu.md) and
# held-out accuracy with TTA 1, 4 and 8 (accuracy-gpu.md); well under an hour on an H200. Bring a CUDA build of torch
# into a fresh .venv: make clean; make TORCH=torch bench-gpu
bench-gpu: install
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python -c "import sys, torch; torch.cuda.is_available() or sys.exit(f'bench-gpu: torch {torch.__version__} sees no CUDA device (with a GPU, a .venv with a CUDA build: make clean; make TORCH=torch bench-gpu)')"
	$(BIN)/python -m pytest -q -rs tests/test_infer.py tests/test_pick.py -k gpu
	$(BIN)/python benchmarks/pick.py --device cuda --grid-shape full --cases grid --amp auto --repeat 2
	$(BIN)/python benchmarks/accuracy.py --device cuda --tta 1 4 8

clean:
	rm -rf $(VENV) demo_out .pytest_cache

# Rebuild the shipped default soup with the cpu-default recipe (about 3.5 hours on 2 CPU cores with bf16): members
# trained on both phantom engines, stored in float16 (half the package size), weights and thresholds searched on
# validation runs of both engines.
default-soup: install
	$(BIN)/copick-soup train --recipe configs/recipes/cpu-default.yaml --out build/cpu-default --resume
	rm -rf copick_soup/soups/default
	$(BIN)/python -m copick_soup.model.checkpoint --float16 copick_soup/soups/default build/cpu-default/unet3d_*.json
	# Validation runs at natural crowding: thresholds trade precision for recall at the particle density they
	# are searched on, so denser validation runs than the tomograms to pick leave them too low.
	rm -rf build/soup-val
	$(BIN)/copick-soup simulate --out build/soup-val --runs 16 --shape 96,256,256 --profile experimental \
		--engine mixed --seed 3000
	# --window 64: the shipped soup was searched in 64³ cubes; its fixed norms make pick's default crop tiling
	# score the same (benchmarks/results/accuracy.md).
	$(BIN)/copick-soup soup -c build/soup-val/copick.json --members copick_soup/soups/default --window 64 \
		--val-runs $$(seq -f 'exp_%03g' -s, 0 15) --out copick_soup/soups/default

# The runs the INT8 members are fine-tuned on: like the default recipe's fine-tuning runs (both engines, seed 2000).
build/finetune-runs/copick.json: | install
	$(BIN)/copick-soup simulate --out build/finetune-runs --runs 12 --shape 96,192,192 --profile experimental \
		--engine mixed --seed 2000 --crowding 2

# The soup `fast` in INT8 (`pick --soup fast-int8`): its tiny denoised member quantised with quantisation-aware
# fine-tuning, the float member as teacher (copick-soup quantise; NNCF), on build/finetune-runs. About 5 minutes on
# 2 CPU cores.
fast-int8: install build/finetune-runs/copick.json
	$(BIN)/copick-soup quantise -c build/finetune-runs/copick.json \
		--member copick_soup/soups/default/unet3d_tiny-denoised.json --out copick_soup/soups/fast-int8

# The default soup in INT8 (build/default-int8/soup.json; not shipped: 35 MB more): its medium members quantised as
# `fast-int8`'s tiny one was, that one reused, weights and thresholds kept. Measured in issue 48's full-tomogram table
# (docs/results.md); about 25 minutes on 2 CPU cores.
default-int8: install build/finetune-runs/copick.json
	for member in unet3d_medium-ctfdeconvolved unet3d_medium-denoised; do \
		$(BIN)/copick-soup quantise -c build/finetune-runs/copick.json \
			--member copick_soup/soups/default/$$member.json --out build/default-int8 || exit 1; done
	$(BIN)/python benchmarks/int8_soup.py --soup default --int8 build/default-int8 copick_soup/soups/fast-int8 \
		--out build/default-int8/soup.json

# The default recipe without one phantom engine (make loeo-fold HELD_OUT=tilt, or blobs): the leave-one-engine-out
# fold issue 46 asks for, trained, searched (weights and thresholds on runs of the other two engines) and scored on
# the held-out engine by benchmarks/generalization.py (results/generalization-fold-ENGINE.md). 3.5 hours and more
# on 2 CPU cores; run it again to go on from where it stopped. HELD_OUT=sart is the shipped soup's own recipe.
HELD_OUT ?= tilt
FOLD_ENGINES = $(subst $(eval) ,+,$(filter-out $(HELD_OUT),blobs tilt sart))
loeo-fold: install
	$(BIN)/copick-soup train --recipe configs/recipes/cpu-default.yaml --engine $(FOLD_ENGINES) \
		--out build/fold-$(HELD_OUT) --resume
	test -f build/fold-$(HELD_OUT)-val/copick.json || $(BIN)/copick-soup simulate --out build/fold-$(HELD_OUT)-val \
		--runs 16 --shape 96,256,256 --profile experimental --engine $(FOLD_ENGINES) --seed 3000
	rm -rf build/fold-$(HELD_OUT)-soup
	$(BIN)/copick-soup soup -c build/fold-$(HELD_OUT)-val/copick.json --members build/fold-$(HELD_OUT) --window 64 \
		--val-runs $$(seq -f 'exp_%03g' -s, 0 15) --out build/fold-$(HELD_OUT)-soup
	$(BIN)/python benchmarks/generalization.py --soup build/fold-$(HELD_OUT)-soup/soup.json \
		--soup-engines $(FOLD_ENGINES) --only soup --label fold-$(HELD_OUT)
