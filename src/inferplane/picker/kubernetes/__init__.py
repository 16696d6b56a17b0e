"""Kubernetes discovery for the picker: the InferencePool's ready pods, its objectives and model rewrites.

Modules: ``cluster`` (in-cluster / kubeconfig connection), ``client`` (async REST list + watch),
``reflector`` (list-then-watch cache), ``resources`` (objects → plain data), ``pool`` (pods →
addresses), ``objectives`` (objectives and rewrites → callbacks), ``watcher`` (all of them for one
picker; why two replicas are safe), ``config`` (``picker.kubernetes``).
"""
