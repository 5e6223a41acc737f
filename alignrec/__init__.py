"""The ``alignrec`` command and the end-to-end pipeline (``alignrec run``)."""
