"""Imported once by the trial zygote (``registry.zygote``, started by ``registry.sandbox``):
everything a trial needs is imported and the allowlist built before any trial forks, so each
trial costs milliseconds."""

from modelyard.registry import introspect, safety

safety.allowed_globals()
introspect.library_versions()
