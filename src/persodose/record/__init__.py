"""A patient's cumulative dose record: internal and CT results stored per patient and exam
(:mod:`~persodose.record.store`), read from result folders (:mod:`~persodose.record.result`) and
reported over time with effective dose and risk (:mod:`~persodose.record.report`). Needs the
``record`` extra (SQLAlchemy)."""
