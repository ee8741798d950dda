"""Adapters of the services the gateway calls outside a job: the trainer's Predict and ReleasePredictor
(:mod:`zehanx_gateway.clients.trainer`). A job's calls to the crawler, codegen and trainer are the
orchestrator's adapters, in ``orchestrator/clients.py``."""
