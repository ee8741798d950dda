from svc_harness import service_factory  # noqa: F401  (fixture)
