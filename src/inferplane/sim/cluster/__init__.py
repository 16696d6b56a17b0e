"""The cluster simulator (``inferplane simulate``): N simulated replicas and the picker's real
scheduling code in one process, in virtual time.

- :mod:`~inferplane.sim.cluster.config`: typed configuration (replica, workload, run);
- :mod:`~inferplane.sim.cluster.workload`: shared-prefix, random and trace workloads;
- :mod:`~inferplane.sim.cluster.routing`: the picker's scheduler, round-robin, random;
- :mod:`~inferplane.sim.cluster.loop`: the discrete-event loop;
- :mod:`~inferplane.sim.cluster.report`: statistics, JSON and markdown;
- :mod:`~inferplane.sim.cluster.capacity`: replica-count search and profile comparison;
- :mod:`~inferplane.sim.cluster.cli`: the ``simulate`` subcommand.
"""
