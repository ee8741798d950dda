"""Adapters of the services the gateway calls: the trainer's Predict and ReleasePredictor
(:mod:`zehanx_gateway.clients.trainer`), and a job's calls to the crawler, codegen and trainer, the
adapters of the job pipeline's ports (:mod:`zehanx_gateway.clients.pipeline`)."""
