"""Evaluation: the report's typed model and table (``report``), the figures a real label went
into (``scoring``: real-test scores and gains, for people to read), and the label-free ones
that choose among refiners (``label_free``)."""
