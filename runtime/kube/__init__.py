"""Kubernetes' Pod API on one host: ``procview apply -f``, ``get``,
``delete`` (docs/pods.md). ``manifest`` reads and checks Pod manifests,
``apply`` converges the pods that run to them, ``status`` reports them as
Kubernetes Pod objects, ``commands`` is the command line."""
