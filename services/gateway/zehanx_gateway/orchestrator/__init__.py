"""Orchestration: the gateway's workers that claim queued jobs and run them across the services.

crawl (crawler.BuildDataset) → plan and generate (codegen.PlanTask / GenerateProgram) → smoke run and
full run (trainer.Train), with at most ``max_repair_attempts`` rounds back to codegen.RepairProgram →
held-out evaluation (inside Train) → publish (archive + model record). See :mod:`.pipeline` for one
job and :mod:`.worker` for leases, heartbeats, cancellation and recovery.
"""
