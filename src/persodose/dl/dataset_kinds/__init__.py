"""Dataset kinds, one module each; a module registers its kind with
:func:`persodose.dl.datasets.register_kind` and is listed in ``KINDS.builtins``
(:mod:`persodose.dl.datasets`)."""
