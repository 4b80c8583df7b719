# Beyond one machine: the pipeline image, and the pipeline on Vertex AI.
# Included from the Makefile (`include deploy.mk`), whose PY and INSTALLED it uses.
#
#   make image        build the pipeline image (needs a Docker engine)
#   make push-image   build and push it (Artifact Registry via gcloud)
#   make compile      compile the pipeline for Vertex AI / Kubeflow Pipelines
#   make submit       compile and submit it to Vertex AI Pipelines
#
# IMAGE names the image; the compiled pipeline runs exactly that one. Project,
# bucket, region etc. come from TAXI_* variables (pipeline/configs.py), or
# add flags with CLOUD_ARGS='--project P --gcs-bucket B'.

IMAGE ?= $(or $(TAXI_PIPELINE_IMAGE),taxi-big-tipper:local)
DOCKER ?= docker
CLOUD_ARGS ?=
# The registry host of IMAGE, e.g. us-central1-docker.pkg.dev.
REGISTRY_HOST = $(firstword $(subst /, ,$(IMAGE)))

.PHONY: image push-image compile submit lint-image

image:
	$(DOCKER) build -t $(IMAGE) .

push-image: image
	gcloud auth configure-docker $(REGISTRY_HOST) --quiet
	$(DOCKER) push $(IMAGE)

compile: $(INSTALLED)
	$(PY) kubeflow_v2_runner.py --image $(IMAGE) $(CLOUD_ARGS)

submit: $(INSTALLED)
	$(PY) kubeflow_v2_runner.py --image $(IMAGE) --submit $(CLOUD_ARGS)

lint-image: $(INSTALLED)
	$(VENV)/bin/hadolint Dockerfile
