# Beyond one machine: the pipeline image, and the pipeline on Vertex AI.
# Included from the Makefile (`include deploy.mk`), whose PY and INSTALLED it uses.
#
#   make image        build the pipeline image (needs a Docker engine)
#   make push-image   build and push it (Artifact Registry via gcloud)
#   make compile      compile the pipeline for Vertex AI / Kubeflow Pipelines
#   make submit       compile and submit it to Vertex AI Pipelines
#
# IMAGE names the image; the compiled pipeline runs exactly that one. Unset, it
# is $(<ENV_PREFIX>_PIPELINE_IMAGE), else [IMAGE_REGISTRY/]<image_name>:IMAGE_TAG
# (CI sets the registry and the commit as tag). Project,
# bucket, region etc. come from <ENV_PREFIX>_* variables (pipeline/configs.py;
# TAXI_* for the taxi project), or add flags with CLOUD_ARGS='--project P --gcs-bucket B'.

# The project's names (pipeline/project.py), read with any Python 3: no venv
# or TensorFlow needed. Recursive (=): only targets that use them run Python.
PROJECT_PYTHON ?= python3
project_name = $(or $(shell $(PROJECT_PYTHON) pipeline/project.py $(1)),$(error \
  cannot read $(1) from pipeline/project.py: set PROJECT_PYTHON to a Python 3))
ENV_PREFIX = $(call project_name,env_var_prefix)
IMAGE_REGISTRY ?=
IMAGE_TAG ?= local
IMAGE ?= $(or $($(ENV_PREFIX)PIPELINE_IMAGE),$(if $(IMAGE_REGISTRY),$(IMAGE_REGISTRY)/)$(call \
  project_name,image_name):$(IMAGE_TAG))
DOCKER ?= docker
CLOUD_ARGS ?=
# The registry host of IMAGE, e.g. us-central1-docker.pkg.dev.
# The commit the image is built from, recorded with each push (audit trail).
GIT_COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
REGISTRY_HOST = $(firstword $(subst /, ,$(IMAGE)))

.PHONY: image push-image compile submit lint-image

image:
	$(DOCKER) build --build-arg GIT_COMMIT=$(GIT_COMMIT) -t $(IMAGE) .

push-image: image
	gcloud auth configure-docker $(REGISTRY_HOST) --quiet
	$(DOCKER) push $(IMAGE)

compile: $(INSTALLED)
	$(PY) kubeflow_v2_runner.py --image $(IMAGE) $(CLOUD_ARGS)

submit: $(INSTALLED)
	$(PY) kubeflow_v2_runner.py --image $(IMAGE) --submit $(CLOUD_ARGS)

lint-image: $(INSTALLED)
	$(VENV)/bin/hadolint Dockerfile
