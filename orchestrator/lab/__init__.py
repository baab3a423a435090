"""The load and fault lab behind ``orchestrator loadtest``: the seed's traffic, time
compressed, run through a pilot setup and through the project, with faults on a schedule.

One job per module: :mod:`scenario` (what the traffic looks like), :mod:`schedule` (the
seeded arrivals), :mod:`faults` (what breaks when), :mod:`pilot` (the plain-Celery pilot's
app and task), :mod:`profiles` (running one profile's fleet), :mod:`runner` (one run:
submit, sample, inject, collect), :mod:`report` (the tables and JSON), :mod:`chart` (the
PNG). Nothing here is imported by the production workers; it needs the ``[bench]`` extra.
"""
