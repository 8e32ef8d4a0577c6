"""The bootstrap: forms a Redis Cluster and converges it to the declared shape, in layers.

Dependencies point one way, down this list (tests/bootstrap/test_layers.py walks the imports):

- **pure** — ``errors`` (every error raised on purpose), ``waiting`` (bounded ``poll``, ``parallel``),
  ``model`` (slots, node table lines, snapshots), ``planner`` (the shape: which node takes which
  role and slots), ``rules`` (every other decision: health, failover mode, the next restart),
  ``engines`` (which server reads which RDB format), ``manifest`` (a backup's contents), ``props``
  (the dynamic resource's inputs, parsed). No I/O; property-tested.
- **Redis I/O** — ``endpoints`` (how a node is reached: directly or through a tunnel), ``operations``
  (look, mesh, forget, replicate, wait), ``failover`` (promote, hand over, swap roles),
  ``migration`` and ``atomic_migration`` (move slots and keys), ``lease`` (one run at a time),
  ``auth`` (live password rotation), ``backup`` and ``restore``.
- **Kubernetes I/O** — ``kube``: the StatefulSet's pods, their restarts, API tunnels. It does not
  import the Redis operations.
- **orchestration** — ``converge`` (one run: heal, form, scale) and ``roll`` (restart stale pods
  one by one, masters after a handover).
- **boundaries** — ``provider`` and ``resource`` (the Pulumi dynamic resources; ``provider`` stays at
  its import path: existing stacks name it), ``password``, and ``cli`` (``python -m bootstrap``).
"""
