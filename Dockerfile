# The pipeline image: TFX 1.16 plus this project. One image for every place
# the pipeline's code runs: Vertex AI / Kubeflow Pipelines steps (TFX sets
# their command), Vertex AI training jobs (likewise) and Dataflow workers
# (`--sdk_container_image`, which start the ENTRYPOINT below).
#   make image IMAGE=<registry>/taxi-big-tipper:<tag>
FROM tensorflow/tfx:1.16.0

# The Beam SDK harness of the Beam version in requirements.lock: Dataflow
# workers boot with it.
ARG BEAM_VERSION=2.59.0

# TFX 1.16 needs Keras 2 (tf-keras): set for every process in the image.
ENV TF_USE_LEGACY_KERAS=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Must equal image_code_root in pipeline/configs.py: the compiled pipeline
# reads the schema and setup.py from here.
WORKDIR /pipeline

# The locked dependencies first, so code edits reuse this layer.
# Same commands as the Makefile's venv target.
COPY requirements.txt requirements.lock setup.py ./
RUN python -m pip install -r requirements.txt -c requirements.lock

COPY examples/ examples/
COPY models/ models/
COPY pipeline/ pipeline/
COPY orchestration/ orchestration/
COPY operations/ operations/
COPY reports/ reports/
COPY client/ client/
COPY compat/ compat/
COPY serving/ serving/
COPY schema/ schema/
COPY local_runner.py kubeflow_v2_runner.py ./
RUN python -m pip install --no-deps -e .

# The commit the image is built from, which the audit trail records with each
# push (the image has no .git): `make -f deploy.mk image` passes it.
ARG GIT_COMMIT=unknown
ENV PIPELINE_GIT_COMMIT=$GIT_COMMIT

COPY --from=apache/beam_python3.10_sdk:${BEAM_VERSION} /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]
