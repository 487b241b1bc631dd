"""Detection: Falco's Kubernetes audit rules (the ``k8s_audit`` source), evaluated on every event.

- ``fields``: the fields of Falco's k8saudit plugin (``ka.*``, ``jevt.*``), bound to a field
  name and argument once, extracting a list of values from a decoded audit event.
- ``condition``: the condition language parsed into a syntax tree (Falco's grammar).
- ``expand``: macros and lists resolved in a tree, with Falco's visibility rules.
- ``compile``: an expanded tree compiled into closures with Falco's comparison semantics; the
  index key of a rule.
- ``items``: the items of rules files read in order (rules, macros, lists, append, override,
  enabled, required versions); ``exceptions``: a rule's exceptions, merged and made a condition.
- ``loader``: the read rules of source ``k8s_audit`` compiled; other sources counted.
- ``output``: a rule's ``output`` template, formatted as Falco's JSON output formats it.
- ``model``: ``Priority``, ``Rule`` and ``Alert`` (Falco's JSON output format).
- ``ruleset``: ``load_rules(paths)`` -> ``RuleSet``; ``RuleSet.evaluate(event)`` -> alerts.
- ``options``: the flags ``rules test`` and ``--sink alerts`` share (``--rules``,
  ``--min-priority``); ``command``: ``audit-consumer rules test``.
"""
